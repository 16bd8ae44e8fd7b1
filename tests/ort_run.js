// ort_run.js - runs an ONNX model with ONNX Runtime (onnxruntime-node) on raw uint8
// images and writes the float32 outputs, for tests/test_onnx_export.c (docs/onnx.md).
//
//   node ort_run.js NODE_MODULES MODEL.onnx IMAGES.u8 N C H W OUT.f32 [BATCH]
//
// IMAGES.u8 holds N images of C*H*W bytes; OUT.f32 gets N rows of the model's output
// "logits" (float32, little-endian), run in batches of BATCH (default 500) on one
// intra-op thread. Prints one JSON line: {"n": N, "classes": K, "seconds": ...}.
// Exit status 2 when onnxruntime-node cannot be loaded (the message says to run
// scripts/bootstrap.sh), 1 on any other failure.
'use strict';
const fs = require('fs');
const path = require('path');

async function main() {
    const a = process.argv.slice(2);
    if (a.length < 8) {
        console.error('usage: node ort_run.js NODE_MODULES MODEL.onnx IMAGES.u8 N C H W OUT.f32 [BATCH]');
        process.exit(1);
    }
    let ort;
    try {
        ort = require(path.join(path.resolve(a[0]), 'onnxruntime-node'));
    } catch (e) {
        console.error(`onnxruntime-node not found in ${a[0]} (${e.message}): run scripts/bootstrap.sh`);
        process.exit(2);
    }
    const [N, C, H, W] = a.slice(3, 7).map(Number);
    const batch = a[8] ? Number(a[8]) : 500;
    const img = fs.readFileSync(a[2]);
    const per = C * H * W;
    if (img.length !== N * per) throw new Error(`${a[2]}: ${img.length} bytes, expected ${N * per}`);
    const sess = await ort.InferenceSession.create(a[1], {intraOpNumThreads: 1, interOpNumThreads: 1,
                                                          graphOptimizationLevel: 'all'});
    const chunks = [];
    let K = 0;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i += batch) {
        const n = Math.min(batch, N - i);
        const x = new ort.Tensor('uint8', new Uint8Array(img.buffer, img.byteOffset + i * per, n * per), [n, C, H, W]);
        const out = await sess.run({pixels: x});
        const y = out.logits;
        if (y.type !== 'float32' || y.dims.length !== 2 || y.dims[0] !== n)
            throw new Error(`logits: type ${y.type}, dims ${y.dims}`);
        K = y.dims[1];
        chunks.push(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
    }
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    fs.writeFileSync(a[7], Buffer.concat(chunks));
    console.log(JSON.stringify({n: N, classes: K, seconds: secs}));
}

main().catch((e) => {
    console.error(`ort_run.js: ${e.message}`);
    process.exit(1);
});
