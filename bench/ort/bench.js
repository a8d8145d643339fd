// ONNX Runtime side of the benchmark (bench/run): inference of the seed U-Net exported by
// tools/export_onnx.py, CPU execution provider, in bench_unet's output format.
//
//     node bench/ort/bench.js MODEL.onnx SIZE BATCH THREADS RUNS
//
// intraOpNumThreads = THREADS (ONNX Runtime's thread pool; the calling thread takes part),
// interOpNumThreads = 1, sequential execution, all graph optimizations.  One warm-up run, then
// RUNS timed runs.  rss_mb is the process's peak resident set (getrusage ru_maxrss, which
// process.resourceUsage() reports in KiB).
'use strict';
const ort = require('onnxruntime-node');

async function main() {
  const [model, size, batch, threads, runs] = [process.argv[2], ...process.argv.slice(3, 7).map(Number)];
  if (!model || !(size > 0 && batch > 0 && threads > 0 && runs > 0)) {
    console.error('usage: node bench.js MODEL.onnx SIZE BATCH THREADS RUNS');
    process.exit(2);
  }
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const n = batch * size * size;
  const data = new Float32Array(n);
  let s = 42;
  for (let i = 0; i < n; i++) {  // a fixed pseudo-random input in [-1, 1)
    s = (s * 1103515245 + 12345) >>> 0;
    data[i] = (s / 4294967296) * 2 - 1;
  }
  const feeds = { x: new ort.Tensor('float32', data, [batch, 1, size, size]) };
  await session.run(feeds);
  const times = [];
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) * 1e-9);
  }
  times.sort((a, b) => a - b);
  const med = runs % 2 ? times[(runs - 1) / 2] : 0.5 * (times[runs / 2 - 1] + times[runs / 2]);
  const rss = process.resourceUsage().maxRSS / 1024;
  console.log(`RESULT impl=ort mode=infer size=${size} batch=${batch} threads=${threads} ` +
              `runs=${runs} median_s=${med.toFixed(4)} min_s=${times[0].toFixed(4)} ` +
              `max_s=${times[runs - 1].toFixed(4)} rss_mb=${rss.toFixed(1)}`);
}

main().catch((e) => { console.error(`bench.js: ${e.message}`); process.exit(1); });
