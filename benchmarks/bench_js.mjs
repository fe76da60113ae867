#!/usr/bin/env node
// Samples per second of the JavaScript sampler in Node (onnxruntime-node on 1 thread, with rows
// shared over every core (the default), and with onnxruntime's intra-op threads instead;
// onnxruntime-web's wasm build) and in headless Chromium (the demo page, wasm with 1 thread
// and, the page being cross-origin isolated, more), against the Python runtime on the same model
// and noise sizes: batch 1, 256 and 100 000, 8 midpoint steps. Node and Python are interleaved:
// Python runs in a child process that times a few solves on each request, in turn with Node's,
// so both see the same machine; each figure is the median of every solve timed. Also the demo
// page's load time and bytes.
//   node benchmarks/bench_js.mjs [--model PATH] [--quick]     (needs `npm ci` in js/)

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { load, DEFAULT_MODEL } from '../js/src/node.mjs';
import { startServer } from '../js/serve.mjs';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt; };
const MODEL = arg('--model', DEFAULT_MODEL);
const BATCHES = process.argv.includes('--quick') ? [1, 256, 10000] : [1, 256, 100000];
const STEPS = 8, SOLVER = 'midpoint', ROUNDS = 8;
const CHROMIUM = process.env.FM_CHROMIUM ?? '/usr/bin/chromium';
const reps = (n) => (n >= 100000 ? 1 : n >= 10000 ? 3 : n >= 256 ? 10 : 100);     // per round

/** A runner for the Python runtime: a child process that, for each "n reps" line, times `reps`
 * solves of n rows (after one warm-up the first time) and answers with their seconds. */
function pythonRunner(threads) {
  const code = `
import json, sys, time, fm_runtime
s = fm_runtime.load(sys.argv[1], threads=${threads})
noise = {}
print("ready", flush=True)
for line in sys.stdin:
    n, reps = map(int, line.split())
    if n not in noise:
        noise[n] = s.noise(n, seed=0)
        s.sample(noise=noise[n], steps=${STEPS}, solver="${SOLVER}")
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); s.sample(noise=noise[n], steps=${STEPS}, solver="${SOLVER}"); ts.append(time.perf_counter() - t0)
    print(json.dumps(ts), flush=True)`;
  const child = spawn(process.env.FM_PYTHON ?? 'python3', ['-c', code, MODEL], {
    env: { ...process.env, PYTHONPATH: [REPO, process.env.PYTHONPATH].filter(Boolean).join(':') }, stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error('the Python runner ended');
    return value;
  };
  const ready = next();
  return {
    async time(n, k) { await ready; child.stdin.write(`${n} ${k}\n`); return JSON.parse(await next()); },
    async close() { child.stdin.end(); await new Promise((r) => child.on('close', r)); },
  };
}

/** A runner for the Node sampler with load() `options`; its worker threads started before timing. */
async function nodeRunner(options) {
  const s = await load(MODEL, options);
  const noise = {};
  return {
    async time(n, k) {
      const run = () => s.sample({ noise: noise[n], steps: STEPS, solver: SOLVER });
      if (!noise[n]) { noise[n] = s.noise(n, 0); await run(); await s.pool?.ready; }
      const ts = [];
      for (let i = 0; i < k; i++) { const t0 = performance.now(); await run(); ts.push((performance.now() - t0) / 1000); }
      return ts;
    },
    close: () => s.release(),
  };
}

/** {name: {n: samples/s}} for runners timed in turn, ROUNDS rounds per batch. */
async function interleaved(runners) {
  const out = Object.fromEntries(Object.keys(runners).map((k) => [k, {}]));
  for (const n of BATCHES) {
    const ts = Object.fromEntries(Object.keys(runners).map((k) => [k, []]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, runner] of Object.entries(runners)) ts[name].push(...await runner.time(n, reps(n)));
    }
    for (const [name, t] of Object.entries(ts)) out[name][n] = n / t.sort((a, b) => a - b)[t.length >> 1];
  }
  for (const runner of Object.values(runners)) await runner.close();
  return out;
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
const names = {
  py1: 'Python runtime (fm_runtime.load, 1 thread)',
  py: `Python runtime (default: tiles on ${cores} threads)`,
  node1: 'Node, onnxruntime-node (1 thread)',
  node: `Node, onnxruntime-node (default: rows shared over ${cores} threads)`,
  intra: `Node, onnxruntime-node (1 thread, ${cores} intra-op threads)`,
  wasm: 'Node, onnxruntime-web wasm (1 thread)',
};
const rates = await interleaved({
  py1: pythonRunner(1), py: pythonRunner(cores),
  node1: await nodeRunner({ workers: 1 }), node: await nodeRunner({}), intra: await nodeRunner({ workers: 1, threads: cores }),
  wasm: await nodeRunner({ backend: 'wasm', threads: 1 }),
});
const results = Object.entries(names).map(([k, name]) => [name, rates[k]]);
const { rows, pageLoad } = await chromiumRates([1, cores]);
results.push(['Chromium, onnxruntime-web wasm (1 thread)', rows[1]]);
results.push([`Chromium, onnxruntime-web wasm (${cores} threads, cross-origin isolated)`, rows[cores]]);
const ref = rates.py1;
console.log(`\n${MODEL.replace(REPO, '')}, ${SOLVER} ${STEPS} steps; samples/s (median of every solve timed; Node and Python `
  + `interleaved), and against the Python runtime on 1 thread\n`);
console.log(`| runtime | ${BATCHES.map((n) => `batch ${n.toLocaleString('en')}`).join(' | ')} |`);
console.log(`|---|${BATCHES.map(() => '---').join('|')}|`);
for (const [name, r] of results) {
  console.log(`| ${name} | ${BATCHES.map((n) => `${fmt(r[n])}/s (${(r[n] / ref[n]).toFixed(2)}×)`).join(' | ')} |`);
}
console.log(`\nNode's default (${cores} threads) against Python's default (${cores} threads): `
  + BATCHES.map((n) => `${(rates.node[n] / rates.py[n]).toFixed(2)}× at ${n.toLocaleString('en')}`).join(', '));
console.log(`\ndemo page load until the shipped model is loaded and self-tested: ${pageLoad.ms.toFixed(0)} ms, `
  + `${(pageLoad.bytes / 2 ** 20).toFixed(2)} MiB of files (HTML, CSS, modules, wasm, model) (cross-origin isolated: ${pageLoad.isolated})`);
