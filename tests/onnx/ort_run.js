// Runs ONNX models in ONNX Runtime (CPU) for the export tests (python/tests/test_export.py).
//
//     node tests/onnx/ort_run.js JOBS.json
//
// JOBS.json is a list of {"model": "m.onnx", "input": "x.npy", "output": "y.npy"}: each input
// (float32, C order, little-endian .npy) is fed to the model's first input, and its first
// output is written as float32 .npy.  One process for all jobs: ONNX Runtime's start-up is paid
// once.  Any failure (a model ONNX Runtime refuses, a shape it cannot run) exits 1 with the
// job and ONNX Runtime's message.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));

function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + hlen;
  const header = buf.toString('latin1', major === 1 ? 10 : 12, start);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header))
    throw new Error(`${file}: expected float32 little-endian C order, header ${header.trim()}`);
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').filter((s) => s.trim() !== '')
    .map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = buf.readFloatLE(start + 4 * i);
  return { data, shape };
}

function writeNpy(file, data, shape) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.alloc(4 * data.length);
  for (let i = 0; i < data.length; i++) body.writeFloatLE(data[i], 4 * i);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), body]));
}

async function main() {
  if (process.argv.length !== 3) {
    console.error('usage: node ort_run.js JOBS.json');
    process.exit(2);
  }
  const jobs = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const sessions = new Map();
  for (const job of jobs) {
    try {
      let session = sessions.get(job.model);
      if (!session) {
        session = await ort.InferenceSession.create(job.model, {
          executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1,
          graphOptimizationLevel: 'all', logSeverityLevel: 3,
        });
        sessions.set(job.model, session);
      }
      const x = readNpy(job.input);
      const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
      const out = await session.run(feeds);
      const y = out[session.outputNames[0]];
      writeNpy(job.output, y.data, y.dims);
    } catch (e) {
      console.error(`ort_run.js: ${job.model} on ${job.input}: ${e.message}`);
      process.exit(1);
    }
  }
}

main();
