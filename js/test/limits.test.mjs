// Every solve bounded in JavaScript as in Python: sample()'s timeoutMs and AbortSignal stop a
// request at the next graph call with TimedOut / Interrupted, load()'s maxMemory refuses requests
// that would take more (ResourceError). The shipped model; no fixtures.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DEFAULT_MODEL, Interrupted, ResourceError, TimedOut, UsageError, load } from '../src/node.mjs';

const LONG = { n: 20000, steps: 5000, seed: 0 };       // seconds of work on one core

test('timeoutMs ends a long request at the next graph call', async () => {
  const s = await load(DEFAULT_MODEL);
  const clock = performance.now();
  await assert.rejects(s.sample({ ...LONG, timeoutMs: 100 }), (e) => {
    assert.ok(e instanceof TimedOut && e.exitCode === 124 && e.key === 'timeoutMs', String(e));
    assert.match(e.message, /stopped after timeoutMs 100 ms/);
    return true;
  });
  const took = performance.now() - clock;
  console.log(`timeoutMs 100: stopped after ${took.toFixed(0)} ms`);
  assert.ok(took < 2000, `${took} ms`);
  assert.equal((await s.sample({ n: 4, seed: 0, timeoutMs: 60000 })).dims[0], 4);      // a roomy one finishes
});

test('an AbortSignal cancels a request', async () => {
  const s = await load(DEFAULT_MODEL);
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  await assert.rejects(s.sample({ ...LONG, signal: controller.signal }),
    (e) => e instanceof Interrupted && e.exitCode === 130 && /cancelled/.test(e.message));
  const done = new AbortController();
  done.abort();
  await assert.rejects(s.sample({ n: 4, seed: 0, signal: done.signal }), Interrupted);
});

test('bad limits are usage errors naming the option', async () => {
  const s = await load(DEFAULT_MODEL);
  for (const timeoutMs of [0, -1, NaN, Infinity, '100']) {
    await assert.rejects(s.sample({ n: 4, timeoutMs }), (e) => e instanceof UsageError && e.key === 'timeoutMs');
  }
  await assert.rejects(s.sample({ n: 4, signal: 'stop' }), (e) => e instanceof UsageError && e.key === 'signal');
  await assert.rejects(load(DEFAULT_MODEL, { maxMemory: -5 }), (e) => e instanceof UsageError && e.key === 'maxMemory');
});

test('maxMemory refuses a request that needs more, before it draws anything', async () => {
  const s = await load(DEFAULT_MODEL, { maxMemory: 8e6 });
  assert.equal((await s.sample({ n: 1000, seed: 0 })).dims[0], 1000);
  await assert.rejects(s.sample({ n: 2_000_000, seed: 0 }), (e) => e instanceof ResourceError && e.key === 'n' && /maxMemory/.test(e.message));
});

test('the entry points check what they are given as sample() does', async () => {
  const s = await load(DEFAULT_MODEL);
  for (const [call, key] of [[() => s.noise(2, -1), 'seed'], [() => s.noise(2, 2n ** 64n), 'seed'], [() => s.noise(2, 1.5), 'seed'],
    [() => s.noise(2, 0, -1), 'start'], [() => s.noise(0), 'n']]) {
    assert.throws(call, (e) => e instanceof UsageError && e.key === key, String(call));
  }
  assert.throws(() => s.noise(1e12), (e) => e instanceof ResourceError && e.key === 'n');
  await assert.rejects(s.sample({ n: 1e12 }), (e) => e instanceof ResourceError && e.key === 'n');
  assert.deepEqual(s.noise(3, 5n), s.noise(3, 5));                      // a BigInt seed is the same seed
  assert.throws(() => s.noise(2, 2 ** 60), (e) => e instanceof UsageError && /give it as a BigInt/.test(e.message));
  await assert.rejects(load(DEFAULT_MODEL, { workers: 1e6 }), (e) => e instanceof UsageError && e.key === 'workers');
});
