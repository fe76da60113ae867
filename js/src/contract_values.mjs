// The shape of every contract value, checked before the sampler uses it: a port of
// fm_runtime/contract_values.py with the same schema, limits and messages. Values are decoded as
// Python decodes them (pyjson.mjs: BigInt integers, Number floats, Map objects).
//
// Schema forms: types(...) of Python type names ('str', 'null'); a plain object {field: schema},
// a field ending in "?" optional, other fields allowed and checked as info; [schema] a list of
// items; a function value -> problem text or null.

import { JsonError, TooDeep, dumps, floatRepr, loads, pyLen } from './pyjson.mjs';

const MAX_RANK = 8;                  // data dimensions (numpy holds 64 with batch and time axes)
const MAX_SIDE = 2n ** 31n - 1n;
const MAX_DIM = 2n ** 28n;           // values per sample: 1 GiB of float32 per row
export const MAX_DEPTH = 12;         // nesting of any value
const MAX_TEXT = 4096;               // characters in a string inside a value
const MAX_BYTES = { selftest: 64 << 20, divergence: 1 << 30 };
const DEFAULT_MAX_BYTES = 1 << 20;
const MAX_NAME = 256;

const isDict = (v) => v instanceof Map;
const isInt = (v) => typeof v === 'bigint';
/** Python's f"{n:,}". */
const commas = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
const tooLong = (s) => s.length > MAX_TEXT && pyLen(s) > MAX_TEXT;
const textProblem = (s) => `holds a text of ${commas(pyLen(s))} characters (at most ${MAX_TEXT})`;

/** A value as the Python runtime shows it in messages: JSON, cut at 60 characters. */
export function show(v) {
  let text;
  try {
    text = typeof v !== 'number' || Number.isFinite(v) ? dumps(v) : floatRepr(v);
  } catch (e) {
    if (e instanceof TooDeep) return 'a value nested too deep to show';
    throw e;
  }
  return text.length <= 60 ? text : text.slice(0, 57) + '...';
}

const MAX_FLOAT_INT = 2n ** 1023n;   // integers beyond this do not fit a float64 (as in Python)
const number = (v) => ((isInt(v) && (v < 0n ? -v : v) <= MAX_FLOAT_INT) || (typeof v === 'number' && Number.isFinite(v)) ? null
  : `must be a finite number, got ${show(v)}`);

const name = (v) => (typeof v === 'string' && v.length > 0 && pyLen(v) <= MAX_NAME ? null
  : `must be a graph input/output name (text, 1-${MAX_NAME} characters), got ${show(v)}`);

const count = (low, high) => (v) => (isInt(v) && low <= v && v <= high ? null
  : `must be an integer from ${low} to ${high}, got ${show(v)}`);

function dataShape(v) {
  if (!Array.isArray(v) || v.length < 1 || v.length > MAX_RANK || v.some((s) => count(1n, MAX_SIDE)(s))) {
    return `must be a list of 1 to ${MAX_RANK} positive integers, got ${show(v)}`;
  }
  const prod = v.reduce((a, b) => a * b, 1n);
  return prod > MAX_DIM ? `declares ${commas(prod)} values per sample; this runtime takes at most ${commas(MAX_DIM)}` : null;
}

/** A nested list of numbers (a self-test array), walked in the Python runtime's order. */
function tensor(v) {
  const stack = [v];
  while (stack.length) {
    const item = stack.pop();
    if (Array.isArray(item)) for (const x of item) stack.push(x);
    else if (number(item)) return `must hold arrays of numbers, found ${show(item)}`;
  }
  return null;
}

/** Free-form description (training, producer, ...): JSON of bounded nesting and text. */
function info(v) {
  const stack = [[v, 0]];
  while (stack.length) {
    const [item, depth] = stack.pop();
    if (depth > MAX_DEPTH) return `is nested more than ${MAX_DEPTH} levels deep`;
    if (typeof item === 'string' && tooLong(item)) return textProblem(item);
    if (isDict(item)) for (const x of item.values()) stack.push([x, depth + 1]);
    else if (Array.isArray(item)) for (const x of item) stack.push([x, depth + 1]);
  }
  return null;
}

const blob = (v) => (typeof v === 'string' ? null : `must be text (base64), got ${show(v)}`);

function tensors(v) {
  if (!isDict(v) || !v.size) return `must map input names to arrays, got ${show(v)}`;
  for (const [k, a] of v) {
    const p = name(k) || tensor(a);
    if (p) return `${k} ${p}`;
  }
  return null;
}

class Types { constructor(...names) { this.names = names; } }
const TEXT = new Types('str');
const POSITIVE = count(1n, 2n ** 31n - 1n);
const SCHEMA = {
  format_version: count(1n, 2n ** 31n - 1n),
  kind: TEXT,
  data_shape: dataShape,
  input_x: name, input_t: name, output_v: name, input_z: name, output_x: name,
  input_y: name,
  baked: { solver: TEXT, steps: POSITIVE, 'nfe?': POSITIVE },
  prediction: TEXT,
  path: { 'name?': TEXT },
  default_solver: TEXT,
  default_schedule: TEXT,
  default_steps: POSITIVE,
  training: {}, producer: {},
  architecture: { 'type?': TEXT, 'dim?': POSITIVE, 'width?': POSITIVE, 'depth?': POSITIVE },
  selftest: { inputs: tensors, output: tensor, 'atol?': number },
  variant: {
    'precision?': TEXT, 'quantize?': new Types('str', 'null'), 'format?': TEXT,
    'vs_fp32?': { size_bytes: number, max_dev: number, mean_dev: number, 'energy_distance?': number,
      'energy_distance_fp32?': number, 'noise_floor?': number },
  },
  num_classes: count(0n, 2n ** 31n - 2n),
  null_class: count(0n, 2n ** 31n - 1n),
  value_range: [number],
  divergence: { 'onnx_base64?': blob, 'unsupported_ops?': [TEXT], 'input_e?': name, 'output_jv?': name },
};

const TYPE_OK = { str: (v) => typeof v === 'string', null: (v) => v === null };
const TYPE_WORD = { str: 'text', null: 'null' };

/** [field path, what is wrong] for the first mismatch, or null. */
function problem(value, schema, field) {
  if (schema instanceof Types) {
    if (!schema.names.some((t) => TYPE_OK[t](value))) {
      return [field, `must be ${schema.names.map((t) => TYPE_WORD[t]).join(' or ')}, got ${show(value)}`];
    }
    return typeof value === 'string' && tooLong(value) ? [field, textProblem(value)] : null;
  }
  if (typeof schema === 'function') {
    const found = schema(value);
    return found ? [field, found] : null;
  }
  if (Array.isArray(schema)) {
    if (!Array.isArray(value)) return [field, `must be a list, got ${show(value)}`];
    for (let i = 0; i < value.length; i++) {
      const found = problem(value[i], schema[0], `${field}[${i}]`);
      if (found) return found;
    }
    return null;
  }
  if (!isDict(value)) return [field, `must be an object, got ${show(value)}`];
  const named = new Set();
  for (const [key, sub] of Object.entries(schema)) {
    const fname = key.replace(/\?$/, '');
    named.add(fname);
    if (!value.has(fname)) {
      if (!key.endsWith('?')) return [`${field}.${fname}`, 'is missing'];
      continue;
    }
    const found = problem(value.get(fname), sub, `${field}.${fname}`);
    if (found) return found;
  }
  for (const [key, item] of value) {        // fields the schema does not name: described only
    const found = named.has(key) ? null : info(item);
    if (found) return [`${field}.${key}`, found];
  }
  return null;
}

/** What is wrong with `value` for contract key `key` (null: nothing). */
export function check(key, value) {
  if (!Object.hasOwn(SCHEMA, key)) return info(value);
  const found = problem(value, SCHEMA[key], '');
  if (!found) return null;
  const [field, what] = found;
  return field ? `${field.replace(/^\.+/, '')} ${what}` : what;
}

/** [value, problem] for one key's raw metadata text: size, JSON and shape checked. */
export function decode(key, raw) {
  const limit = MAX_BYTES[key] ?? DEFAULT_MAX_BYTES;
  const size = raw.length > limit ? pyLen(raw) : raw.length;
  if (size > limit) return [null, `is ${commas(size)} bytes, more than the ${commas(limit)} this key may hold`];
  let value;
  try {
    value = loads(raw);
  } catch (e) {
    if (e instanceof TooDeep) return [null, `is nested more than ${MAX_DEPTH} levels deep`];
    if (e instanceof JsonError) return [null, `is not valid JSON (${e.message.slice(0, 80)}): ${show(raw)}`];
    throw e;
  }
  return [value, check(key, value)];
}
