// The Node sampler runs onnxruntime-node's binding directly (node-session.mjs): the locked
// onnxruntime-node has the binding it reads, its samples equal the public API's bit for bit, and
// a long solve still gives the event loop turns. The shipped model; no fixtures.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ortNode from 'onnxruntime-node';

import { DEFAULT_MODEL, load } from '../src/node.mjs';
import { YIELD_MS, hasDirect } from '../src/node-session.mjs';

test('the locked onnxruntime-node is run through its binding, with the same samples as its public API', async () => {
  assert.ok(hasDirect(), 'onnxruntime-node/dist/binding.js is not the binding node-session.mjs reads');
  const direct = await load(DEFAULT_MODEL);
  const publicApi = await load(DEFAULT_MODEL, { ort: ortNode });     // an ort given: its public API
  assert.equal(direct.session.constructor.name, 'DirectSession');
  assert.equal(publicApi.session.constructor.name, 'InferenceSession');
  for (const [solver, steps] of [['euler', 3], ['midpoint', 8], ['rk4', 2]]) {
    const noise = direct.noise(3000, 7);        // two tiles of 2048 rows
    const a = await direct.sample({ noise, solver, steps }), b = await publicApi.sample({ noise, solver, steps });
    assert.deepEqual(a.dims, b.dims);
    assert.ok(a.data.every((v, i) => Object.is(v, b.data[i])), `${solver}:${steps} differs`);
  }
  await direct.release();
  await publicApi.release();
});

test('a long solve gives the event loop a turn every few milliseconds', async () => {
  const s = await load(DEFAULT_MODEL);
  let ticks = 0;
  const timer = setInterval(() => { ticks++; }, 1);
  const t0 = performance.now();
  await s.sample({ n: 4096, steps: 200, seed: 0 });       // 400 graph calls, hundreds of ms
  const took = performance.now() - t0;
  clearInterval(timer);
  console.log(`${ticks} timer ticks in a ${took.toFixed(0)} ms solve (a turn every ${YIELD_MS} ms of graph calls)`);
  assert.ok(took > 4 * YIELD_MS, `${took} ms: too short to show anything`);
  assert.ok(ticks >= 2, `${ticks} ticks in ${took.toFixed(0)} ms`);
});
