// A request's extra inputs (contract version 4), as fm_runtime/engine/conditions.py: every
// condition the file declares checked against its dtype and rank and made per-row, every symbol
// of the shapes bound once, and the nulls guidance feeds. request.mjs builds the request with them.

import { InputError, ResourceError, UsageError, show } from './errors.mjs';
import { bindSpec, symbolic } from './contract.mjs';
import { CONTRACT } from './definitions.mjs';

// mirrors: fm_runtime/engine/options.py (usage)
const usage = (key, message, field = null) => new UsageError(message, { key, field });
// mirrors: fm_runtime/engine/options.py (bad_input)
const badInput = (key, message, field = null) => new InputError(message, { key, field });
const isWhole = (v) => typeof v === 'number' && Number.isInteger(v);

// mirrors: fm_runtime/engine/request.py (guiding)
/** {nulls, interval, calls} of a request, as Python's guiding: what the unconditional half feeds
 * for each condition with a null ({data [n x size], dims}), the interval of t guidance applies on,
 * and how its halves are called ("batched": one call on 2n rows, or "two"). */
export function guiding(spec, guidance, inputs, staged, n, interval, calls) {
  const [a, b] = interval ?? [0, 1];     // both checked against their declarations (options.mjs)
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

// mirrors: fm_runtime/engine/conditions.py (given_nulls)
/** A request's own nulls (nullCond: a negative prompt's conditions, after the condition stage when
 * it gave the stage's inputs) as {data [n x size], dims}: each names a condition of the file and
 * has the request's shape for it, per row or for every row. */
export function givenNulls(spec, where, given, inputs, n) {
  const out = {};
  for (const [name, value] of Object.entries(given ?? {})) {
    const item = spec.inputs.find((i) => i.name === name && i.role === 'condition');
    if (!item) {
      const conditions = spec.inputs.filter((i) => i.role === 'condition').map((i) => i.name).join(', ');
      throw usage('nullCond', `${where}: nullCond names ${show(name)}, which is not a condition of this file (${conditions || 'it has none'})`, name);
    }
    const [data, shape] = asArray(item, value), want = inputs[name].dims;
    const one = shape.join(',') === want.join(',');
    if (!one && !(shape.length === want.length + 1 && shape[0] === n && shape.slice(1).join(',') === want.join(','))) {
      throw badInput('nullCond', `${where}: the null of ${show(name)} has shape [${shape.join(', ')}]; the request's ${show(name)} is [${n}, ${want.join(', ')}] (or give one row: [${want.join(', ')}])`, name);
    }
    out[name] = perRow({ [name]: { data, dims: want, batched: !one } }, n)[name];
  }
  return out;
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

// mirrors: fm_runtime/engine/conditions.py (bind_inputs)
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
  const about = (i) => `${i.dtype} [${i.shape.join(', ')}], role ${i.role}`;
  if (missing.length && (spec.stage.outputs ?? []).includes(missing[0].name)) {     // what the request gives is the stage's inputs
    const inputs = spec.stage.inputs.map((i) => `${i.name} (${i.dtype} [${i.shape.join(', ')}])`).join(', ');
    throw usage('cond', `${where} needs ${inputs}: its condition stage makes ${show(missing[0].name)} from them (or give ${show(missing[0].name)} itself, ${about(missing[0])})`, missing[0].name);
  }
  if (missing.length) throw usage('cond', `${where} needs the condition ${show(missing[0].name)} (${about(missing[0])})`, missing[0].name);
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
  if (rows === 0) throw usage('cond', 'the per-row conditions have no rows (give at least one)');
  const spec2 = bindSpec(spec, Object.fromEntries(Object.entries(bound).map(([k, v]) => [k, v[0]])));
  for (const shape of [spec2.dataShape, ...spec2.inputs.map((i) => i.shape)]) {
    const size = shape.reduce((a, b) => a * b, 1);
    if (size > CONTRACT.limits.max_dim) {
      throw new ResourceError(`${where}: with ${Object.entries(bound).map(([k, v]) => `${k} = ${v[0].toLocaleString('en-US')}`).join(', ')} one row has ${size.toLocaleString('en-US')} values; this runtime takes at most ${CONTRACT.limits.max_dim.toLocaleString('en-US')}`);
    }
  }
  for (const item of spec2.inputs) {
    if (item.role === 'mask' && !arrays[item.name]) {
      arrays[item.name] = { data: new Float32Array(item.shape.reduce((a, b) => a * b, 1)).fill(1), dims: item.shape, batched: false };
    }
  }
  return [spec2, arrays, rows];
}

// mirrors: fm_runtime/engine/conditions.py (_as_array)
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
  if (value.data instanceof Float32Array || value.data instanceof Float64Array
      || !Array.from(value.data).every((v) => typeof v === 'bigint' || Number.isInteger(v))) {
    throw badInput('cond', `${source} must be int64 integers, got ${value.data.constructor.name}`, name);
  }
  const past = Array.from(value.data, (v) => BigInt(v)).find((v) => v > 2n ** 63n - 1n || v < -(2n ** 63n));
  if (past !== undefined) throw badInput('cond', `${source} holds ${past}, past int64`, name);
  const data = BigInt64Array.from(value.data, (v) => BigInt(v));
  if (item.range) {
    const [low, high] = item.range, bad = data.find((v) => v < BigInt(low) || v > BigInt(high));
    if (bad !== undefined) throw badInput('cond', `${source} holds the id ${bad}; this file takes ${low}..${high}`, name);
  }
  return [data, shape];
}

// mirrors: fm_runtime/engine/conditions.py (_check_size)
/** A symbol's size within the file's bounds for it. */
export function checkSize(spec, where, name, size) {
  const bounds = spec.symbols[name], low = bounds.min ?? 1, high = bounds.max ?? CONTRACT.limits.max_symbol, step = bounds.multiple_of ?? 1;
  if (!(size >= low && size <= high) || size % step) {
    throw usage('dims', `${name} = ${size} is outside what ${where} takes: ${low} <= ${name} <= ${high}${step > 1 ? `, a multiple of ${step}` : ''}`, name);
  }
}

// mirrors: fm_runtime/engine/conditions.py (per_row)
/** Each input as {data [n x size], dims}: one given without the batch axis repeats for every row. */
export function perRow(arrays, n) {
  const out = {};
  for (const [name, { data, dims, batched }] of Object.entries(arrays)) {
    if (batched) { out[name] = { data, dims }; continue; }
    const all = new data.constructor(n * data.length);
    for (let r = 0; r < n; r++) all.set(data, r * data.length);
    out[name] = { data: all, dims };
  }
  return out;
}

/** x [rows, *shape] *= mask [rows, *maskShape] (each mask dimension 1 or the data's), in place. */
export function maskRows(x, mask, rows, spec) {
  const shape = spec.dataShape, mshape = spec.inputs.find((i) => i.role === 'mask').shape;
  const dim = spec.dim, msize = mask.length / rows;
  const index = new Array(shape.length).fill(0);
  for (let i = 0; i < dim; i++) {
    for (let d = shape.length - 1, rem = i; d >= 0; d--) { index[d] = rem % shape[d]; rem = Math.floor(rem / shape[d]); }
    let m = 0;      // the mask element that row-major position i of a sample broadcasts from
    for (let d = 0; d < shape.length; d++) m = m * mshape[d] + (mshape[d] === 1 ? 0 : index[d]);
    for (let r = 0; r < rows; r++) x[r * dim + i] = Math.fround(x[r * dim + i] * mask[r * msize + m]);
  }
}
