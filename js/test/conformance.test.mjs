// The shared conformance vectors (tests/conformance/, written by scripts/conformance_vectors.py)
// run against the JavaScript runtime; tests/runtime/test_conformance.py runs the same files against the
// Python one. Refusals compare error class, key and field, not message text. No torch, no fixtures.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { readSpec } from '../src/contract.mjs';
import * as errors from '../src/errors.mjs';
import { noiseRows } from '../src/noise.mjs';
import { parseSchedule } from '../src/schedules.mjs';
import { integrate } from '../src/solvers.mjs';

const vectors = (name) => JSON.parse(readFileSync(new URL(`../../tests/conformance/${name}.json`, import.meta.url), 'utf8'));
const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

test('metadata: the same specs and the same refusals (class, key, field)', () => {
  for (const c of vectors('metadata')) {
    const read = () => readSpec('model.onnx', c.metadata, c.inputs, c.outputs, { dataShape: c.options?.data_shape ?? null });
    if (c.expect.spec) {
      const spec = read();
      for (const [field, want] of Object.entries(c.expect.spec)) assert.deepEqual(spec[camel(field)], want, `${c.name}: ${field}`);
    } else {
      assert.throws(read, (e) => {
        assert.ok(e instanceof errors[c.expect.error], `${c.name}: ${e}`);
        assert.deepEqual([e.key, e.field], [c.expect.key, c.expect.field], `${c.name}: ${e.message}`);
        return true;
      }, c.name);
    }
  }
});

test('schedules: the same float64 grids and the same refusals', () => {
  for (const c of vectors('schedules')) {
    if (c.error) assert.throws(() => parseSchedule(c.schedule).grid(4, 0, 1), Error, c.schedule);
    else assert.deepEqual(parseSchedule(c.schedule).grid(c.steps, 0, 1), c.grid, c.schedule);
  }
});

test('noise: the seeded stream gives Python\'s float32 values, bit for bit', () => {
  for (const c of vectors('noise')) {
    const seed = BigInt(c.seed) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(c.seed) : BigInt(c.seed);
    const got = noiseRows(seed, c.start, c.stop, c.dim);
    assert.deepEqual(Array.from(got), c.values.map(Math.fround), `seed ${c.seed} rows ${c.start}..${c.stop}`);
  }
});

test('tableaus: every fixed-step solver gives the same float32 state, bit for bit', async () => {
  for (const c of vectors('tableaus')) {
    const fr = Math.fround;
    const fields = {      // a flow map's jump gets t as [s, t]
      't - x': (x, t) => Float32Array.from(x, (v) => fr(fr(t) - v)),
      's + t - x': (x, [s, t]) => Float32Array.from(x, (v) => fr(fr(fr(s) + fr(t)) - v)),
    };
    const f = fields[c.field];
    const { x, nfe } = await integrate(f, Float32Array.from(c.x0), c.steps, c.solver, null, c.schedule);
    assert.deepEqual(Array.from(x), Array.from(Float32Array.from(c.x)), `${c.solver} ${c.steps} ${c.schedule}`);
    assert.equal(nfe, c.nfe);
  }
});

test('requests: the same refusals (class, key, field)', async () => {
  const { load } = await import('../src/node.mjs');
  const models = { moons: await load(), cond: await load(new URL('../../tests/conformance/cond.onnx', import.meta.url).pathname) };
  const array = (v) => Float32Array.from(v.data, (x) => (x === 'nan' ? NaN : x));
  const camel = (k) => k.replace(/_(.)/g, (_, c) => c.toUpperCase());     // Python's names, JavaScript's spelling
  for (const c of vectors('requests')) {
    const request = Object.fromEntries(Object.entries(c.request).map(([k, v]) => [camel(k), v]));
    if (request.noise) request.noise = array(request.noise);
    for (const key of ['cond', 'nullCond']) {
      if (request[key]) request[key] = Object.fromEntries(Object.entries(request[key]).map(([k, v]) => [k, { data: array(v), dims: v.dims }]));
    }
    await assert.rejects(models[c.model].sample(request), (e) => {
      assert.ok(e instanceof errors[c.expect.error], `${c.name}: ${e}`);
      assert.deepEqual([e.key, e.field], [camel(c.expect.key), c.expect.field], `${c.name}: ${e.message}`);
      return true;
    }, c.name);
  }
});
