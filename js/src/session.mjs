// One onnxruntime session for a graph this package reads: created from bytes, with load failures
// said in one line, and the graph's self-test (fm.selftest) run as fm_runtime/model/session.py does.

import { ModelError, printable } from './errors.mjs';

// mirrors: fm_runtime/model/session.py (load_failure)
export function loadFailure(where, e) {
  const msg = String(e?.message ?? e).split(/\s+/).join(' ').slice(0, 300);
  const low = msg.toLowerCase();
  if (low.includes('external')) {
    return new ModelError(`${where}: the model keeps weights in a separate external-data file; fm-runtime loads one-file models only (re-export, or onnx.save(..., save_as_external_data=False))`);
  }
  if (low.includes('not a registered function/op') || low.includes('could not find an implementation')) {
    return new ModelError(`${where}: the model uses an operator this onnxruntime does not provide (custom operators are not supported): ${msg}`);
  }
  return new ModelError(`${where}: not a loadable ONNX model (${msg})`);
}

function tensorFromRows(ort, rows, type) {
  const dims = [];
  for (let a = rows; Array.isArray(a); a = a[0]) dims.push(a.length);
  const flat = dims.length ? rows.flat(Infinity) : [rows];
  if (flat.length !== dims.reduce((p, d) => p * d, 1) || !flat.every((v) => typeof v === 'number')) throw new TypeError('ragged');
  if (type === 'tensor(int64)' && !flat.every((v) => Math.abs(v) < 2 ** 63)) throw new RangeError('past int64');     // as numpy's OverflowError
  const data = type === 'tensor(int64)' ? BigInt64Array.from(flat, (v) => BigInt(Math.trunc(v))) : Float32Array.from(flat);
  return new ort.Tensor(type === 'tensor(int64)' ? 'int64' : 'float32', data, dims);
}

// mirrors: fm_runtime/model/session.py (self_test)
/** Run the probe the exporter recorded (fm.selftest) and compare, as fm_runtime/model/session.py does. */
export async function selfTest(ort, session, inputs, probe, where) {
  if (!probe || !Object.keys(probe).length) return;
  let feed, want, atol;
  try {
    const types = Object.fromEntries(inputs.map((i) => [i.name, i.type]));
    feed = Object.fromEntries(Object.entries(probe.inputs).map(([k, v]) => [k, tensorFromRows(ort, v, types[k])]));
    want = tensorFromRows(ort, probe.output, 'tensor(float)');
    atol = Number(probe.atol ?? 1e-3);
    if (!Number.isFinite(atol)) throw new TypeError('atol');
  } catch {
    throw new ModelError(`${where}: metadata fm.selftest is malformed`);
  }
  const fed = Object.keys(feed).sort(), takes = inputs.map((i) => i.name).sort();
  if (fed.join('\0') !== takes.join('\0')) {
    throw new ModelError(`${where}: fm.selftest feeds ${fed.join(', ')}, but the graph takes ${takes.join(', ')}`);
  }
  let got;
  try {
    got = Object.values(await session.run(feed))[0];
  } catch (e) {
    throw new ModelError(`${where}: fm.selftest does not fit the graph (${printable(String(e?.message ?? e).slice(0, 300))})`);
  }
  let same = got.dims.join(',') === want.dims.join(','), diff = NaN;
  if (same) {
    diff = 0;
    for (let i = 0; i < want.data.length; i++) {
      const d = Math.abs(got.data[i] - want.data[i]);
      diff = Math.max(diff, Number.isNaN(d) ? Infinity : d);
      if (!(d <= atol * Math.max(1, Math.abs(want.data[i])))) same = false;
    }
  }
  if (!same) {
    throw new ModelError(`${where}: fails its self-test: the graph's output differs from the values recorded at export (max |diff| ${Number(diff.toPrecision(3))}); the file was altered or corrupted`);
  }
}

/** session.run with onnxruntime's failures as one-line ModelErrors (as Python's graph_errors);
 * `Kind` another error class where the failure is the request's (a stage that passed its
 * self-test failing on the request's values). */
export async function runGraph(session, feed, fetches, where, what = 'the graph failed while running', Kind = ModelError,
  extra = {}) {
  try {
    return await session.run(feed, fetches);
  } catch (e) {
    throw new Kind(`${where}: ${what} (${printable(String(e?.message ?? e).split(/\s+/).join(' ').slice(0, 300))})`, extra);
  }
}
