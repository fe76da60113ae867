// One request, built once: the model's defaults applied and every argument of sample() checked in
// one place, with the same errors as the Python runtime's fm_runtime/engine/request.py (whose
// Request and sampling_request this mirrors by name): UsageError for values the caller chose,
// InputError for noise.

import { InputError, UsageError, show } from './errors.mjs';
import { bindSpec, symbolic } from './contract.mjs';
import { CONTRACT } from './definitions.mjs';
import { MAX_STEPS, SOLVERS } from './solvers.mjs';
import { parseSchedule } from './schedules.mjs';

/** A refused request argument: `key` names it (n, steps, cond, ...), `field` what inside it. */
const usage = (key, message, field = null) => new UsageError(message, { key, field });
/** An unusable array of a request (noise, a condition). */
const badInput = (key, message, field = null) => new InputError(message, { key, field });

const OPTIONS = ['n', 'steps', 'solver', 'schedule', 'noise', 'labels', 'guidance', 'seed', 'cond', 'dims', 'guidanceInterval',
  'guidanceCalls'];
const isWhole = (v) => typeof v === 'number' && Number.isInteger(v);

function count(n) {
  if (!isWhole(n) || n < 1) throw usage('n', `n must be a whole number >= 1, got ${show(n)}`);
  return n;
}

function checkGrid(spec, where, steps, solver) {
  steps ??= spec.defaultSteps;
  if (!isWhole(steps)) throw usage('steps', `steps must be an integer, got ${show(steps)}`);
  solver ||= spec.defaultSolver;
  if (!(typeof solver === 'string' && Object.hasOwn(SOLVERS, solver))) {
    const adaptive = Object.entries(CONTRACT.solvers.methods).filter(([, m]) => m.kind === 'adaptive').map(([k]) => k);
    throw usage('solver', `unknown solver ${show(solver)}; choose one of: ${Object.keys(SOLVERS).join(', ')} (fixed steps), ${adaptive.join(', ')} (adaptive)`);
  }
  if (!(steps >= 1 && steps <= MAX_STEPS)) throw usage('steps', `steps must be between 1 and ${MAX_STEPS}, got ${steps}`);
  return [steps, solver];
}

/** [schedule, steps] of a request: the model's default schedule when none is given; an explicit
 * time grid fixes the steps (given steps must agree with it). */
function checkSchedule(spec, schedule, steps) {
  let s;
  try {
    s = parseSchedule(schedule ?? spec.defaultSchedule);
  } catch (e) {
    throw usage('schedule', e.message);
  }
  if (s.steps !== null) {
    if (steps != null && steps !== s.steps) {
      const what = schedule == null ? "the model's default time grid" : 'the time grid';
      throw usage('schedule', `${what} has ${s.steps} steps, not ${steps} (give times for ${steps} steps, or another schedule)`);
    }
    steps = s.steps;
  }
  return [s, steps];
}

function checkGuidance(guidance, labels, spec) {
  const g = typeof guidance === 'number' ? guidance : NaN;
  if (typeof guidance !== 'number') throw usage('guidance', `guidance must be a number, got ${show(guidance)}`);
  if (!Number.isFinite(g) || Math.abs(g) > 1e3) throw usage('guidance', `guidance must be a finite number of magnitude <= 1000, got ${g}`);
  const guidable = spec.inputs.some((i) => i.null || i.role === 'guidance');
  if (g !== 1 && labels == null && !guidable) {
    throw usage('guidance', `guidance ${g} needs labels (it weighs the conditional against the unconditional velocity)`);
  }
  return g;
}

function checkNoise(spec, noise, n) {
  if (!(noise instanceof Float32Array || noise instanceof Float64Array || Array.isArray(noise))) {
    throw badInput('noise', `noise must be a Float32Array (n x ${spec.dim} values, row-major), got ${noise?.constructor?.name ?? typeof noise}`);
  }
  const shape = `[${spec.dataShape.join(', ')}]`;
  if (noise.length === 0) throw badInput('noise', 'noise has no rows');
  if (noise.length % spec.dim !== 0) {
    throw badInput('noise', `noise has ${noise.length} values, not a whole number of rows of shape ${shape} (${spec.dim} values each)`);
  }
  const rows = noise.length / spec.dim;
  if (n != null && rows !== n) throw badInput('noise', `noise has ${rows} rows but n = ${n}`);
  const x = Float32Array.from(noise);
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) throw badInput('noise', 'noise contains NaN or Inf');
  }
  return x;
}

function checkLabels(spec, where, labels, n) {
  if (labels == null) return null;
  if (!spec.numClasses) throw usage('labels', `${where} is not class-conditional; it takes no labels`);
  const one = typeof labels === 'number' || typeof labels === 'bigint';
  if (!one && !(Array.isArray(labels) || ArrayBuffer.isView(labels))) {
    throw usage('labels', `labels must be an integer or an array of integers, got ${show(labels)}`);
  }
  const list = one ? [labels] : Array.from(labels);
  const notInt = list.find((v) => !((typeof v === 'number' && Number.isInteger(v)) || typeof v === 'bigint'));
  if (notInt !== undefined) throw usage('labels', `labels must be integers, got ${show(notInt)}`);
  if (!one && list.length !== n) throw usage('labels', `labels have shape [${list.length}], expected [${n}] (one per sample)`);
  const bad = list.find((v) => v < 0 || v > spec.numClasses);
  if (bad !== undefined) {
    throw usage('labels', `label ${bad} is out of range: this model has classes 0..${spec.numClasses - 1} (and ${spec.nullClass} for no label)`);
  }
  return one ? new BigInt64Array(n).fill(BigInt(labels)) : BigInt64Array.from(list, (v) => BigInt(v));
}

/** A request {n, steps, solver, schedule, noise, labels, guidance, seed}, checked: the Request {n, kind,
 * solver, steps, schedule (a Schedule), labels (BigInt64Array [n] or null), guidance, seed, noise
 * (Float32Array or null)}; kind is the solver's kind in contract.json's registry, or "baked". */
export function samplingRequest(spec, where, options, staged = {}) {
  if (options === null || typeof options !== 'object') throw usage('options', `sample() takes an options object, got ${show(options)}`);
  const unknown = Object.keys(options).filter((k) => !OPTIONS.includes(k));
  if (unknown.length) throw usage(unknown[0], `unknown option ${show(unknown[0])} (sample() takes ${OPTIONS.join(', ')})`);
  let { n = null, steps = null, solver = null, schedule = null, noise = null, labels = null, guidance = 1, seed = null } = options;
  if (CONTRACT.solvers.methods[solver]?.kind === 'adaptive') {
    throw usage('solver', `the adaptive solver ${solver} runs in the Python runtime only; the JavaScript sampler takes a fixed-step solver: ${Object.keys(SOLVERS).join(', ')}`);
  }
  if (spec.kind === 'baked') {
    const b = spec.baked;
    if (schedule != null && String(checkSchedule(spec, schedule, null)[0]) !== spec.defaultSchedule) {
      throw usage('schedule', `${where} is a baked sampler on the ${spec.defaultSchedule} time schedule; it cannot run another (export another --bake with --schedule)`);
    }
    if ((steps != null && steps !== b.steps) || (solver != null && solver !== b.solver)) {
      throw usage('solver', `${where} is a baked ${b.solver}:${b.steps} sampler; it cannot run ${solver ?? b.solver}:${steps ?? b.steps} (export another --bake)`);
    }
  }
  [schedule, steps] = checkSchedule(spec, schedule, steps);
  [steps, solver] = checkGrid(spec, where, steps, solver);
  guidance = checkGuidance(guidance, labels, spec);
  if (n != null) n = count(n);
  const [bound, inputs, rows] = bindInputs(spec, where, options.cond, options.dims, n);
  if (noise != null) {
    noise = checkNoise(bound, noise, n);
    n = noise.length / bound.dim;
    if (rows != null && rows !== n) throw usage('n', `the noise has ${n} rows but the per-row conditions have ${rows}`);
  } else if (n == null && rows == null) {
    throw usage('n', 'give n (how many samples) or noise (the starting points)');
  } else {
    n = n ?? rows;
    if (seed != null && !(isWhole(seed) && seed >= 0 && seed <= 0xffffffff)) {
      throw usage('seed', `seed must be a whole number in [0, 2**32), got ${show(seed)}`);
    }
  }
  const kind = spec.kind === 'baked' ? 'baked' : CONTRACT.solvers.methods[solver].kind;
  const rowsIn = perRow(inputs, n);
  return { n, kind, spec: bound, solver, steps, schedule, labels: checkLabels(spec, where, labels, n), guidance, seed, noise,
    inputs: rowsIn, ...guiding(bound, guidance, rowsIn, staged, n, options.guidanceInterval, options.guidanceCalls ?? 'batched') };
}

/** {nulls, interval, calls} of a request, as Python's guiding: what the unconditional half feeds
 * for each condition with a null ({data [n x size], dims}), the interval of t guidance applies on,
 * and how its halves are called ("batched": one call on 2n rows, or "two"). */
function guiding(spec, guidance, inputs, staged, n, interval, calls) {
  if (calls !== 'batched' && calls !== 'two') {
    throw usage('guidanceCalls', `guidanceCalls must be 'batched' (both halves in one call) or 'two', got ${show(calls)}`);
  }
  interval ??= [0, 1];
  if (!Array.isArray(interval) || interval.length !== 2 || !interval.every((v) => typeof v === 'number')) {
    throw usage('guidanceInterval', `guidanceInterval must be two times [a, b], got ${show(interval)}`);
  }
  const [a, b] = interval;
  if (!(a >= 0 && a <= b && b <= 1)) throw usage('guidanceInterval', `guidanceInterval must satisfy 0 <= a <= b <= 1, got (${a}, ${b})`);
  const nulls = {};
  if (guidance !== 1 && !spec.inputs.some((i) => i.role === 'guidance')) {
    for (const item of spec.inputs) {
      const { data, dims } = inputs[item.name] ?? {};
      if (item.null === 'zeros') nulls[item.name] = { data: new data.constructor(data.length), dims };
      else if (item.null === 'stored') nulls[item.name] = { data: broadcastRows(spec.nullValues[item.name], dims, n), dims };
      else if (item.null === 'stage') {
        const made = staged[item.name];
        if (made.dims.join(',') !== dims.join(',')) {
          throw badInput('cond', `the condition stage made the null ${show(item.name)} of shape [${made.dims.join(', ')}], not the request's [${dims.join(', ')}]`, item.name);
        }
        nulls[item.name] = made.data.length === data.length ? made : { data: broadcastRows(made, dims, n), dims };
      }
    }
  }
  return { nulls, interval: [a, b], calls };
}

/** {data, dims} (each dimension 1 or the target's) repeated to n rows of shape `dims`. */
function broadcastRows({ data, dims: from }, dims, n) {
  const size = dims.reduce((p, d) => p * d, 1), out = new data.constructor(n * size);
  const index = new Array(dims.length).fill(0);
  for (let i = 0; i < size; i++) {
    for (let d = dims.length - 1, rem = i; d >= 0; d--) { index[d] = rem % dims[d]; rem = Math.floor(rem / dims[d]); }
    let m = 0;
    for (let d = 0; d < dims.length; d++) m = m * from[d] + (from[d] === 1 ? 0 : index[d]);
    for (let r = 0; r < n; r++) out[r * size + i] = data[m];
  }
  return out;
}

/** [the spec with its symbols bound, {name: {data, dims, batched}}, rows the per-row inputs fix or
 * null], as Python's bind_inputs: every declared input given (a mask may be left out: all ones),
 * none it does not declare, of its dtype and rank with or without the batch axis, finite; every
 * symbol bound once (from the inputs and `dims`), all agreeing and within the file's bounds.
 * A condition is {data: a typed array or array of numbers, dims: its shape}. */
export function bindInputs(spec, where, cond, dims, n) {
  cond = cond ?? {}; dims = dims ?? {};
  for (const [what, v] of [['cond', cond], ['dims', dims]]) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw usage(what, `${what} must be an object by name, got ${show(v)}`);
  }
  if (!spec.inputs.length && !symbolic(spec)) {
    const given = Object.keys(cond).length ? cond : dims;
    if (Object.keys(given).length) {
      throw usage(given === cond ? 'cond' : 'dims', `${where} declares no conditions or symbols; it takes no ${given === cond ? 'cond' : 'dims'} (${Object.keys(given).join(', ')})`);
    }
    return [spec, {}, null];
  }
  const declared = Object.fromEntries(spec.inputs.map((i) => [i.name, i]));
  const unknown = Object.keys(cond).filter((k) => !Object.hasOwn(declared, k)).sort();
  if (unknown.length) throw usage('cond', `${where} has no input ${show(unknown[0])}; its conditions are ${Object.keys(declared).join(', ') || 'none'}`, unknown[0]);
  const missing = spec.inputs.filter((i) => !Object.hasOwn(cond, i.name) && i.role !== 'mask' && i.role !== 'guidance');
  if (missing.length) throw usage('cond', `${where} needs the condition ${show(missing[0].name)} (${missing[0].dtype} [${missing[0].shape.join(', ')}], role ${missing[0].role})`, missing[0].name);
  const bound = {};
  for (const [name, size] of Object.entries(dims)) {
    if (!Object.hasOwn(spec.symbols, name)) throw usage('dims', `${where} has no symbol ${show(name)}; its symbols are ${Object.keys(spec.symbols).join(', ') || 'none'}`, name);
    if (!isWhole(size)) throw usage('dims', `dims ${name} must be a whole number, got ${show(size)}`, name);
    bound[name] = [size, 'dims'];
  }
  const bind = (shape, decl, source, name) => shape.forEach((got, j) => {
    const want = decl[j];
    if (typeof want === 'string') {
      if (Object.hasOwn(bound, want) && bound[want][0] !== got) {
        throw usage('dims', `the symbols disagree: ${bound[want][1]} gives ${want} = ${bound[want][0]}, ${source} gives ${want} = ${got}`, want);
      }
      bound[want] ??= [got, source];
    } else if (got !== want) {
      throw badInput('cond', `${source} has shape [${shape.join(', ')}], expected [${decl.join(', ')}]`, name);
    }
  });
  const arrays = {};
  let rows = null;
  for (const [name, value] of Object.entries(cond)) {
    const item = declared[name], source = `condition ${show(name)}`;
    const [data, shape] = asArray(item, value);
    const batched = shape.length === item.shape.length + 1;
    if (batched) {
      if (rows != null && rows !== shape[0]) throw usage('cond', `the per-row conditions disagree on rows: ${rows} and ${shape[0]} (${show(name)})`);
      rows = shape[0];
      bind(shape.slice(1), item.shape, source, name);
    } else if (shape.length === item.shape.length) {
      bind(shape, item.shape, source, name);
    } else {
      throw badInput('cond', `${source} has shape [${shape.join(', ')}]; expected [${item.shape.join(', ')}] for every row or [n, ${item.shape.join(', ')}] per row`, name);
    }
    arrays[name] = { data, dims: batched ? shape.slice(1) : shape, batched };
  }
  if (n != null && rows != null && n !== rows) throw usage('n', `n = ${n} but the per-row conditions have ${rows} rows`);
  for (const name of Object.keys(spec.symbols)) {
    if (Object.hasOwn(bound, name)) checkSize(spec, where, name, bound[name][0]);
    else if ([...spec.dataShape, ...spec.inputs.flatMap((i) => i.shape)].includes(name)) {
      throw usage('dims', `nothing binds the symbol ${name}: give dims: {${name}: ...}`, name);
    }
  }
  const spec2 = bindSpec(spec, Object.fromEntries(Object.entries(bound).map(([k, v]) => [k, v[0]])));
  for (const item of spec2.inputs) {
    if (item.role === 'mask' && !arrays[item.name]) {
      arrays[item.name] = { data: new Float32Array(item.shape.reduce((a, b) => a * b, 1)).fill(1), dims: item.shape, batched: false };
    }
  }
  return [spec2, arrays, rows];
}

/** [data as the item's dtype (Float32Array, finite; BigInt64Array), its dims] of a condition
 * {data: a typed array or array of numbers, dims: its shape}. */
export function asArray(item, value) {
  const name = item.name, source = `condition ${show(name)}`;
  if (value === null || typeof value !== 'object' || !Array.isArray(value.dims) || value.data == null) {
    throw badInput('cond', `${source} must be {data, dims} (a typed array and its shape), got ${show(value)}`, name);
  }
  const shape = value.dims;
  if (!shape.every((d) => isWhole(d) && d >= 0)) throw badInput('cond', `${source} has dims ${show(shape)}; expected whole numbers`, name);
  const size = shape.reduce((a, b) => a * b, 1);
  if (value.data.length !== size) throw badInput('cond', `${source} has ${value.data.length} values for dims [${shape.join(', ')}] (${size})`, name);
  if (item.dtype === 'float32') {
    const data = Float32Array.from(value.data, Number);
    if (data.some((v) => !Number.isFinite(v))) throw badInput('cond', `${source} contains NaN or Inf`, name);
    return [data, shape];
  }
  if (!Array.from(value.data).every((v) => typeof v === 'bigint' || Number.isInteger(v))) throw badInput('cond', `${source} must be integers (int64)`, name);
  return [BigInt64Array.from(value.data, (v) => BigInt(v)), shape];
}

/** A symbol's size within the file's bounds for it. */
export function checkSize(spec, where, name, size) {
  const bounds = spec.symbols[name], low = bounds.min ?? 1, high = bounds.max ?? CONTRACT.limits.max_symbol, step = bounds.multiple_of ?? 1;
  if (!(size >= low && size <= high) || size % step) {
    throw usage('dims', `${name} = ${size} is outside what ${where} takes: ${low} <= ${name} <= ${high}${step > 1 ? `, a multiple of ${step}` : ''}`, name);
  }
}

/** Each input as {data [n x size], dims}: one given without the batch axis repeats for every row. */
function perRow(arrays, n) {
  const out = {};
  for (const [name, { data, dims, batched }] of Object.entries(arrays)) {
    if (batched) { out[name] = { data, dims }; continue; }
    const all = new data.constructor(n * data.length);
    for (let r = 0; r < n; r++) all.set(data, r * data.length);
    out[name] = { data: all, dims };
  }
  return out;
}
