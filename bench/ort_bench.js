// ort_bench.js - ONNX Runtime's speed on qat's ONNX exports (docs/onnx.md), the
// counterpart of bench_qrt_file.c for qat's runtime; bench/onnx_bench.sh runs both.
//
//   node bench/ort_bench.js NODE_MODULES IMAGES.u8 C H W [--threads T] [--rounds R]
//                           [--seconds S] MODEL.onnx ...
//
// One long-lived process: each model gets one session (intra-op threads T, default 2;
// inter-op 1; all graph optimisations) and a warm-up; then R rounds (default 5), each
// measuring every model in turn:
//   - batch 256: images/s over S seconds (default 2) of back-to-back runs;
//   - batch 1:   the median latency of the runs in S seconds;
// and the medians over the rounds, one JSON line per model. The images are the first
// 256 of IMAGES.u8 (raw uint8, C*H*W each).
'use strict';
const fs = require('fs');
const path = require('path');

function median(a) {
    const s = [...a].sort((x, y) => x - y);
    return s[Math.floor(s.length / 2)];
}

async function main() {
    const a = process.argv.slice(2);
    const opt = {threads: 2, rounds: 5, seconds: 2};
    const models = [];
    for (let i = 5; i < a.length; i++) {
        if (a[i] === '--threads' || a[i] === '--rounds' || a[i] === '--seconds') opt[a[i].slice(2)] = Number(a[++i]);
        else models.push(a[i]);
    }
    if (a.length < 5 || !models.length) {
        console.error('usage: node ort_bench.js NODE_MODULES IMAGES.u8 C H W [--threads T] [--rounds R] [--seconds S] MODEL.onnx ...');
        process.exit(1);
    }
    let ort;
    try {
        ort = require(path.join(path.resolve(a[0]), 'onnxruntime-node'));
    } catch (e) {
        console.error(`onnxruntime-node not found in ${a[0]} (${e.message}): run scripts/bootstrap.sh`);
        process.exit(2);
    }
    const [C, H, W] = a.slice(2, 5).map(Number);
    const per = C * H * W, B = 256;
    const img = fs.readFileSync(a[1]);
    if (img.length < B * per) throw new Error(`${a[1]}: fewer than ${B} images`);
    const x256 = new ort.Tensor('uint8', new Uint8Array(img.buffer, img.byteOffset, B * per), [B, C, H, W]);
    const x1 = new ort.Tensor('uint8', new Uint8Array(img.buffer, img.byteOffset, per), [1, C, H, W]);
    const now = () => Number(process.hrtime.bigint()) / 1e9;
    // Every session first, then the rounds interleave the models, so that the drift of a
    // shared machine hits them alike.
    const sessions = [];
    for (const m of models) {
        const sess = await ort.InferenceSession.create(m, {intraOpNumThreads: opt.threads, interOpNumThreads: 1,
                                                           graphOptimizationLevel: 'all',
                                                           executionMode: 'sequential'});
        for (let i = 0; i < 3; i++) await sess.run({pixels: x256}); // warm-up
        for (let i = 0; i < 50; i++) await sess.run({pixels: x1});
        sessions.push({m, sess, thr: [], lat: []});
    }
    for (let r = 0; r < opt.rounds; r++) {
        for (const s of sessions) {
            let t0 = now(), n = 0;
            while (now() - t0 < opt.seconds) {
                await s.sess.run({pixels: x256});
                n++;
            }
            s.thr.push(n * B / (now() - t0));
            const times = [];
            t0 = now();
            while (now() - t0 < opt.seconds) {
                const t = now();
                await s.sess.run({pixels: x1});
                times.push(now() - t);
            }
            s.lat.push(median(times) * 1e6);
        }
    }
    for (const s of sessions)
        console.log(JSON.stringify({engine: 'onnxruntime', model: s.m, threads: opt.threads, rounds: opt.rounds,
                                    batch256_images_per_s: Math.round(median(s.thr)),
                                    batch1_latency_us: Number(median(s.lat).toFixed(1))}));
}

main().catch((e) => {
    console.error(`ort_bench.js: ${e.message}`);
    process.exit(1);
});
