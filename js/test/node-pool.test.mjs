// A large request's rows shared over worker threads in Node (node-pool.mjs): the shares, the same
// samples as one thread (noise, seeds, labels with guidance), a worker's errors as their own
// classes, cancellation and deadlines reaching the workers, and idle workers that never keep a
// process alive.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

import { DEFAULT_MODEL, Interrupted, NumericalError, TimedOut, UsageError, load } from '../src/node.mjs';
import { MIN_SPLIT_VALUES, shares } from '../src/node-pool.mjs';
import { fixtures } from './fixtures.mjs';

const same = (a, b) => a.data.length === b.data.length && a.data.every((v, i) => Object.is(v, b.data[i]));

/** A sampler on two threads whose workers are running. */
async function shared(path = DEFAULT_MODEL) {
  const s = await load(path, { workers: 2 });
  s.pool.start();
  await s.pool.ready;
  assert.equal(s.pool.workers.length, 1);
  return s;
}

test('rows are shared in contiguous parts of at least MIN_SPLIT_VALUES values', () => {
  assert.equal(MIN_SPLIT_VALUES, 256);
  assert.deepEqual(shares(1, 2, 2), [[0, 1]]);
  assert.deepEqual(shares(255, 2, 2), [[0, 255]]);               // 2 x 127.5 rows: under 256 values each
  assert.deepEqual(shares(256, 2, 2), [[0, 128], [128, 256]]);
  assert.deepEqual(shares(10001, 2, 2), [[0, 5001], [5001, 10001]]);
  assert.deepEqual(shares(10000, 2, 1), [[0, 10000]]);
  assert.deepEqual(shares(3, 768, 4), [[0, 1], [1, 2], [2, 3]]);  // an image row is work enough
  assert.deepEqual(shares(600, 2, 3), [[0, 200], [200, 400], [400, 600]]);
});

test('shared rows give the samples of one thread', async () => {
  const one = await load(DEFAULT_MODEL, { workers: 1 }), two = await shared();
  assert.equal(one.pool, undefined);
  const noise = one.noise(5000, 11);
  let calls = 0;
  const post = two.pool.workers[0].postMessage.bind(two.pool.workers[0]);
  two.pool.workers[0].postMessage = (m, ...rest) => { if (m.options) calls++; return post(m, ...rest); };
  for (const opts of [{ noise, steps: 8 }, { noise, solver: 'heun', steps: 3 }, { n: 3001, seed: 5, schedule: 'cosine' }]) {
    const a = await one.sample(opts), b = await two.sample(opts);
    assert.deepEqual(b.dims, a.dims);
    assert.equal(b.nfe, a.nfe);
    assert.ok(same(a, b), JSON.stringify(Object.keys(opts)));
  }
  assert.equal(calls, 3, 'every request sent rows to the worker');
  assert.ok(same(await one.sample({ n: 10, seed: 1 }), await two.sample({ n: 10, seed: 1 })));   // too small to share
  assert.equal(calls, 3);
  await one.release();
  await two.release();
});

test('labels and guidance are shared row by row', async () => {
  const c = fixtures().manifest.parity.find((p) => p.labels != null && p.guidance !== 1);
  const one = await load(c.model, { workers: 1 }), two = await shared(c.model);
  const labels = Array.from({ length: 4000 }, (_, i) => i % 2);
  for (const opts of [{ n: 4000, seed: 2, labels, guidance: c.guidance }, { n: 4000, seed: 3, labels: 1 }]) {
    assert.ok(same(await one.sample(opts), await two.sample(opts)));
  }
  await assert.rejects(two.sample({ n: 4000, labels: [1, 2] }), (e) => e instanceof UsageError && e.key === 'labels');
  await one.release();
  await two.release();
});

test("a worker's failure is the caller's, with its class", async () => {
  const s = await shared();
  const noise = s.noise(4000, 0);
  noise[2 * 3999] = 3e38;                     // the last row, the worker's: the network overflows
  await assert.rejects(s.sample({ noise, steps: 4 }), (e) => {
    assert.ok(e instanceof NumericalError && e.exitCode === 5, String(e));
    assert.match(e.message, /in 1 of 2000 rows of a tile/);
    return true;
  });
  await assert.rejects(load(DEFAULT_MODEL, { workers: 0 }), (e) => e instanceof UsageError && e.key === 'workers');
  await s.release();
});

test('an AbortSignal and timeoutMs stop the workers too', async () => {
  const s = await shared();
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  let t0 = performance.now();
  await assert.rejects(s.sample({ n: 20000, steps: 5000, seed: 0, signal: controller.signal }), Interrupted);
  await assert.rejects(s.sample({ n: 20000, steps: 5000, seed: 0, timeoutMs: 100 }), TimedOut);
  // the worker dropped both: a shared request right after finishes at once
  t0 = performance.now();
  assert.equal((await s.sample({ n: 4000, seed: 0, steps: 2 })).dims[0], 4000);
  const took = performance.now() - t0;
  console.log(`a shared request after two stopped ones: ${took.toFixed(0)} ms`);
  assert.ok(took < 3000, `${took} ms: the worker is still solving a stopped request`);
  await s.release();
});

test('idle workers never keep a process alive', () => {
  const run = (body) => spawnSync(process.execPath, ['--input-type=module', '-e',
    `import { load } from ${JSON.stringify(new URL('../src/node.mjs', import.meta.url).href)};\nconst s = await load();\n${body}`],
  { encoding: 'utf8', timeout: 60000 });
  // the last request shared, no release(): the process ends when its script does
  let p = run(`await s.sample({ n: 20000, seed: 0, steps: 2 });
await s.pool.ready;
for (let i = 0; i < 5; i++) await s.sample({ n: 20000, seed: i, steps: 2 });
console.log(s.pool.workers.length, 'worker(s)');`);
  assert.equal(p.status, 0, p.stderr);
  assert.equal(p.stdout, '1 worker(s)\n');
  // ... and while its workers are still loading
  p = run(`await s.sample({ n: 20000, seed: 0, steps: 2 });
console.log(s.pool.workers.length, 'worker(s)');`);
  assert.equal(p.status, 0, p.stderr);
  assert.equal(p.stdout, '0 worker(s)\n');
});
