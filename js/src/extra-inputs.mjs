// The contract's version 4 keys beyond their schemas, as fm_runtime/model/extra_inputs.py:
// fm.inputs and fm.symbols (named extra inputs, roles, nulls, the symbols their shapes share),
// fm.null_values (the stored nulls) and fm.condition_stage. contract.mjs reads them through this.

import { ModelError, show } from './errors.mjs';
import { CONTRACT } from './definitions.mjs';
import { isSymbol } from './schema.mjs';

const PREFIX = CONTRACT.prefix;

// mirrors: fm_runtime/model/extra_inputs.py (refuse)
/** A metadata value that fits its schema but not the rest of the file or this runtime. */
export const refuse = (where, key, what, field = '') => new ModelError(`${where}: ${what}`, { key: PREFIX + key, field });

const MAX_SYMBOL = CONTRACT.limits.max_symbol;

// mirrors: fm_runtime/model/extra_inputs.py (check_range)
/** An input's declared range of ids: an int64 input's, low <= high. */
function checkRange(where, key, item, field) {
  if ('range' in item && (item.dtype !== 'int64' || item.range[0] > item.range[1])) {
    throw refuse(where, key, `${show(item.name)} declares the range ${show(item.range)}: only an int64 input has one, [low, high] with low <= high`, `${field}.range`);
  }
}

// mirrors: fm_runtime/model/extra_inputs.py (read_conditions)
/** fm.inputs and fm.symbols (contract version 4) beyond their schema, as Python's _conditions. */
export function conditions(where, m, py, shape, kind, taken) {
  const symbols = m.symbols ?? {}, inputs = m.inputs ?? [];
  if (kind === 'baked' && (inputs.some((i) => 'null' in i) || Object.keys(m.null_values ?? {}).length)) {
    throw refuse(where, 'inputs', 'a baked file guides inside its graph (its guidance input takes the weight); its conditions declare no nulls', 'null');
  }
  for (const [name, bounds] of Object.entries(symbols)) {
    if (!isSymbol(name)) throw refuse(where, 'symbols', `fm.symbols names ${show(name)}, which is not a symbol (letters, digits, _)`, name);
    if ((bounds.min ?? 1) > (bounds.max ?? MAX_SYMBOL)) {
      throw refuse(where, 'symbols', `fm.symbols ${name}: min ${bounds.min} is above max ${bounds.max}`, name);
    }
  }
  const seen = new Set();
  inputs.forEach((item, i) => {
    const field = `[${i}]`;
    if (seen.has(item.name) || taken.has(item.name)) {
      throw refuse(where, 'inputs', `fm.inputs names ${show(item.name)} twice (or as x, t or y)`, `${field}.name`);
    }
    seen.add(item.name);
    if ('null' in item && item.role !== 'condition') {
      throw refuse(where, 'inputs', `fm.inputs ${show(item.name)}: only a condition has a null value`, `${field}.null`);
    }
    if (item.null === 'stored' && !Object.hasOwn(m.null_values ?? {}, item.name)) {
      throw refuse(where, 'inputs', `fm.inputs ${show(item.name)}: its null is stored but fm.null_values has no ${show(item.name)}`, `${field}.null`);
    }
    if (item.role === 'mask' && (item.dtype !== 'float32' || item.shape.length !== shape.length
        || item.shape.some((d, j) => d !== 1 && d !== shape[j]))) {
      throw refuse(where, 'inputs', `fm.inputs ${show(item.name)}: a mask is float32 with the data's rank, each dimension 1 or the data's`, `${field}.shape`);
    }
    checkRange(where, 'inputs', item, field);
    if (item.role === 'guidance' && (item.dtype !== 'float32' || item.shape.length)) {
      throw refuse(where, 'inputs', `fm.inputs ${show(item.name)}: a guidance input is one float32 per row (shape [])`, `${field}.shape`);
    }
  });
  for (const role of ['mask', 'guidance']) {
    if (inputs.filter((item) => item.role === role).length > 1) throw refuse(where, 'inputs', `fm.inputs has more than one ${role} input`);
  }
  const stage = Object.keys(m.condition_stage ?? {}).length ? m.condition_stage : null;     // {}: none, as absent
  if (stage) {     // fm.condition_stage: it provides declared inputs; its own inputs are new names
    const declared = inputs.map((item) => item.name);
    stage.outputs.forEach((name, i) => {
      if (!declared.includes(name) || stage.outputs.indexOf(name) !== i) {
        throw refuse(where, 'condition_stage', `fm.condition_stage provides ${show(name)}, which is not an input of fm.inputs (or is named twice)`, `outputs[${i}]`);
      }
    });
    stage.inputs.forEach((item, i) => {
      if (declared.includes(item.name) || stage.inputs.findIndex((j) => j.name === item.name) !== i) {
        throw refuse(where, 'condition_stage', `fm.condition_stage input ${show(item.name)} is named twice (or as an input of fm.inputs)`, `inputs[${i}].name`);
      }
      checkRange(where, 'condition_stage', item, `inputs[${i}]`);
      const unknown = item.shape.filter((d) => typeof d === 'string' && !Object.hasOwn(symbols, d));
      if (unknown.length) throw refuse(where, 'condition_stage', `fm.condition_stage input ${show(item.name)} uses ${unknown[0]}, which fm.symbols does not declare`, `inputs[${i}].shape`);
    });
  }
  const nullValues = storedNulls(where, m.null_values ?? {}, inputs);
  inputs.forEach((item, i) => {
    if (item.null === 'stage' && !(stage?.outputs ?? []).includes(item.name)) {
      throw refuse(where, 'inputs', `fm.inputs ${show(item.name)}: its null comes from the condition stage, which does not provide it`, `[${i}].null`);
    }
  });
  const used = new Set([...shape, ...inputs.flatMap((item) => item.shape)].filter((d) => typeof d === 'string'));
  const missing = [...used].filter((d) => !Object.hasOwn(symbols, d)).sort();
  if (missing.length) throw refuse(where, 'symbols', `the shapes use ${missing.join(', ')}, which fm.symbols does not declare`, missing[0]);
  return [inputs, symbols, stage ?? {}, nullValues];
}

// mirrors: fm_runtime/model/schema.py (nested_shape)
/** The shape of a nested array of numbers, or null when it is ragged or deeper than max_rank. */
function nestedShape(v) {
  const shape = [];
  let level = [v];
  while (level.length && Array.isArray(level[0])) {
    if (shape.length >= CONTRACT.limits.max_rank || level.some((a) => !Array.isArray(a) || a.length !== level[0].length)) return null;
    shape.push(level[0].length);
    level = level.flat(1);
  }
  return level.some((a) => Array.isArray(a)) ? null : shape;
}

// mirrors: fm_runtime/model/extra_inputs.py (read_nulls)
/** fm.null_values beyond its schema, as Python's read_nulls: {name: {data, dims}} for every input
 * whose null is "stored", shaped as the input with 1 for each symbol. */
function storedNulls(where, stored, inputs) {
  const out = {};
  for (const [name, value] of Object.entries(stored)) {
    const item = inputs.find((i) => i.name === name);
    if (item?.null !== 'stored') {
      throw refuse(where, 'null_values', `fm.null_values holds ${show(name)}, which no input of fm.inputs declares with null "stored"`, name);
    }
    const want = item.shape.map((d) => (typeof d === 'string' ? 1 : d)), got = nestedShape(value);
    if (got === null || got.join(',') !== want.join(',')) {
      throw refuse(where, 'null_values', `fm.null_values ${show(name)} has shape ${got ? show(got) : 'ragged'}, expected ${show(want)} (the input's, 1 for each symbol)`, name);
    }
    const flat = want.length ? value.flat(Infinity) : [value];
    const ok = item.dtype === 'float32' ? flat.every((v) => Number.isFinite(Math.fround(v)))
      : flat.every((v) => Number.isInteger(v) && Math.abs(v) < 2 ** 53);
    if (!ok) {
      throw refuse(where, 'null_values', `fm.null_values ${show(name)} holds values that are not ${item.dtype} (past float32's range, or not whole numbers below 2**53)`, name);
    }
    out[name] = { data: item.dtype === 'float32' ? Float32Array.from(flat) : BigInt64Array.from(flat, (v) => BigInt(v)), dims: want };
  }
  return out;
}
