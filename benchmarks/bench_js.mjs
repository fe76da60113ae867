#!/usr/bin/env node
// Samples per second of the JavaScript sampler in Node (onnxruntime-node; onnxruntime-web's wasm
// build) and in headless Chromium (the demo page, wasm with 1 thread and, the page being
// cross-origin isolated, more), against the Python runtime on the same model and noise sizes:
// batch 1, 256 and 100 000, 8 midpoint steps. Also the demo page's load time and bytes.
//   node benchmarks/bench_js.mjs [--model PATH] [--quick]     (needs `npm ci` in js/)

import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { load, DEFAULT_MODEL } from '../js/src/node.mjs';
import { startServer } from '../js/serve.mjs';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt; };
const MODEL = arg('--model', DEFAULT_MODEL);
const BATCHES = process.argv.includes('--quick') ? [1, 256, 10000] : [1, 256, 100000];
const STEPS = 8, SOLVER = 'midpoint';
const CHROMIUM = process.env.FM_CHROMIUM ?? '/usr/bin/chromium';

/** Median seconds of `reps` calls after one warm-up; reps shrink for big batches. */
async function timeit(fn, n) {
  await fn();
  const reps = n >= 100000 ? 3 : n >= 256 ? 20 : 200, times = [];
  for (let i = 0; i < reps; i++) { const t0 = performance.now(); await fn(); times.push((performance.now() - t0) / 1000); }
  return times.sort((a, b) => a - b)[reps >> 1];
}

async function nodeRates(backend, threads) {
  const s = await load(MODEL, { backend, threads });
  const out = {};
  for (const n of BATCHES) {
    const noise = s.noise(n, 0);
    out[n] = n / await timeit(() => s.sample({ noise, steps: STEPS, solver: SOLVER }), n);
  }
  await s.release();
  return out;
}

function pythonRates(threads) {
  const code = `
import json, sys, time, numpy as np, fm_runtime
s = fm_runtime.load(sys.argv[1], threads=${threads})
out = {}
for n in ${JSON.stringify(BATCHES)}:
    z = s.noise(n, seed=0)
    s.sample(noise=z, steps=${STEPS}, solver="${SOLVER}")
    reps = 3 if n >= 100000 else 20 if n >= 256 else 200
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); s.sample(noise=z, steps=${STEPS}, solver="${SOLVER}"); ts.append(time.perf_counter() - t0)
    out[n] = n / sorted(ts)[reps // 2]
print(json.dumps(out))`;
  const p = spawnSync(process.env.FM_PYTHON ?? 'python3', ['-c', code, MODEL], {
    env: { ...process.env, PYTHONPATH: [REPO, process.env.PYTHONPATH].filter(Boolean).join(':') }, encoding: 'utf8',
  });
  if (p.status !== 0) throw new Error(`python: ${p.stderr}`);
  return JSON.parse(p.stdout);
}

async function chromiumRates(threadsList) {
  const { chromium } = await import('../js/node_modules/playwright-core/index.mjs');
  const server = await startServer();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const rows = {}, pageLoad = {};
  for (const threads of threadsList) {
    const page = await browser.newPage();
    const t0 = performance.now();
    // n=1: the page's first draw costs nothing, so ready ~ model loaded and self-tested
    await page.goto(`${server.url}/js/demo/?threads=${threads}&n=1`);
    const isolated = await page.evaluate(() => globalThis.crossOriginIsolated);
    await page.evaluate(() => window.fmDemo.ready);
    const loadMs = performance.now() - t0;
    const bytes = await page.evaluate(() => performance.getEntries()
      .filter((e) => e.entryType === 'resource' || e.entryType === 'navigation')
      .reduce((sum, e) => sum + (e.decodedBodySize || 0), 0));
    await new Promise((r) => setTimeout(r, 200));
    if (threads === 1) Object.assign(pageLoad, { ms: loadMs, bytes, isolated });
    rows[threads] = await page.evaluate(async ({ batches, steps, solver }) => {
      const s = window.fmDemo.sampler, out = {};
      for (const n of batches) {
        const noise = s.noise(n, 0), run = () => s.sample({ noise, steps, solver });
        await run();
        const reps = n >= 100000 ? 3 : n >= 256 ? 20 : 200, ts = [];
        for (let i = 0; i < reps; i++) { const t = performance.now(); await run(); ts.push((performance.now() - t) / 1000); }
        out[n] = n / ts.sort((a, b) => a - b)[reps >> 1];
      }
      return out;
    }, { batches: BATCHES, steps: STEPS, solver: SOLVER });
    await page.close();
  }
  await browser.close();
  await server.close();
  return { rows, pageLoad };
}

const fmt = (v) => (v >= 1e5 ? `${(v / 1e3).toFixed(0)} k` : v >= 1e3 ? `${(v / 1e3).toFixed(1)} k` : v.toFixed(0));
const cores = cpus().length;
const results = [];
results.push(['Python runtime (fm_runtime.load, 1 thread)', pythonRates(1)]);
results.push([`Python runtime (default: tiles on ${cores} threads)`, pythonRates(cores)]);
results.push(['Node, onnxruntime-node (1 thread)', await nodeRates('cpu', 1)]);
results.push(['Node, onnxruntime-web wasm (1 thread)', await nodeRates('wasm', 1)]);
const { rows, pageLoad } = await chromiumRates([1, cores]);
results.push(['Chromium, onnxruntime-web wasm (1 thread)', rows[1]]);
results.push([`Chromium, onnxruntime-web wasm (${cores} threads, cross-origin isolated)`, rows[cores]]);
const ref = results[0][1];
console.log(`\n${MODEL.replace(REPO, '')}, ${SOLVER} ${STEPS} steps; samples/s (median of repeats), and against the Python runtime on 1 thread\n`);
console.log(`| runtime | ${BATCHES.map((n) => `batch ${n.toLocaleString('en')}`).join(' | ')} |`);
console.log(`|---|${BATCHES.map(() => '---').join('|')}|`);
for (const [name, r] of results) {
  console.log(`| ${name} | ${BATCHES.map((n) => `${fmt(r[n])}/s (${(r[n] / ref[n]).toFixed(2)}×)`).join(' | ')} |`);
}
console.log(`\ndemo page load until the shipped model is loaded and self-tested: ${pageLoad.ms.toFixed(0)} ms, `
  + `${(pageLoad.bytes / 2 ** 20).toFixed(2)} MiB of files (HTML, CSS, modules, wasm, model) (cross-origin isolated: ${pageLoad.isolated})`);
