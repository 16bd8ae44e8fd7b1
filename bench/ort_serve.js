// ort_serve.js - ONNX Runtime as a long-lived peer of bench/qat_bench, driven over a
// pipe like bench/pytorch_bench.py:
//
//   node bench/ort_serve.js NODE_MODULES IMAGES.u8 THREADS
//
// reads one command per line on stdin and answers one JSON line on stdout:
//
//   prep ID MODEL.onnx BATCH   a session (THREADS intra-op threads, 1 inter-op, all graph
//                              optimisations, sequential) and a warm-up  -> {"ok": true}
//   run ID SECONDS             session.run back to back for SECONDS       -> {"calls": N,
//                              "median_s": per-call median, "wall_s": elapsed, "batch": B}
//   rss                        {"ok": true}; every answer carries the peak RSS (rss_mib)
//   quit
//
// The input is the first BATCH images of IMAGES.u8 (raw uint8, 1x28x28 each), fed as the
// uint8 "pixels" tensor qat's ONNX exports take.
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');

async function main() {
    const a = process.argv.slice(2);
    if (a.length !== 3) {
        console.error('usage: node ort_serve.js NODE_MODULES IMAGES.u8 THREADS');
        process.exit(2);
    }
    let ort;
    try {
        ort = require(path.join(path.resolve(a[0]), 'onnxruntime-node'));
    } catch (e) {
        console.error(`onnxruntime-node not found in ${a[0]} (${e.message})`);
        process.exit(2);
    }
    const img = fs.readFileSync(a[1]);
    const threads = Number(a[2]);
    const per = 28 * 28;
    const now = () => Number(process.hrtime.bigint()) / 1e9;
    const items = new Map();
    const say = (o) => process.stdout.write(JSON.stringify(Object.assign(o, {rss_mib: process.resourceUsage().maxRSS / 1024})) + '\n');
    say({ok: true, threads});
    const rl = readline.createInterface({input: process.stdin, terminal: false});
    for await (const line of rl) {
        const w = line.trim().split(/\s+/);
        if (!w[0]) continue;
        if (w[0] === 'quit') break;
        try {
            if (w[0] === 'prep') {
                const batch = Number(w[3]);
                if (img.length < batch * per) throw new Error(`${a[1]}: fewer than ${batch} images`);
                const x = new ort.Tensor('uint8', new Uint8Array(img.buffer, img.byteOffset, batch * per), [batch, 1, 28, 28]);
                const sess = await ort.InferenceSession.create(w[2], {intraOpNumThreads: threads, interOpNumThreads: 1,
                                                                      graphOptimizationLevel: 'all',
                                                                      executionMode: 'sequential'});
                for (let i = 0; i < (batch === 1 ? 50 : 5); i++) await sess.run({pixels: x});
                items.set(w[1], {sess, x, batch});
                say({ok: true});
            } else if (w[0] === 'rss') {
                say({ok: true});
            } else if (w[0] === 'run') {
                const it = items.get(w[1]);
                if (!it) throw new Error(`no item ${w[1]}`);
                const seconds = Number(w[2]), times = [];
                const t0 = now();
                for (;;) {
                    const s = now();
                    await it.sess.run({pixels: it.x});
                    const e = now();
                    times.push(e - s);
                    if (e - t0 >= seconds) break;
                }
                const wall = now() - t0;
                times.sort((p, q) => p - q);
                say({calls: times.length, median_s: times[Math.floor(times.length / 2)], wall_s: wall, batch: it.batch});
            } else {
                throw new Error(`unknown command ${w[0]}`);
            }
        } catch (e) {
            say({error: e.message});
        }
    }
}

main().catch((e) => {
    console.error(`ort_serve.js: ${e.message}`);
    process.exit(1);
});
