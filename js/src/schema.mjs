// The shape of every contract value, checked before the sampler uses it: an interpreter of the
// schemas in fm_runtime/contract.json, the same file and the same messages as the Python runtime's
// fm_runtime/model/schema.py (see there for the schema forms). Values are decoded as Python decodes
// them (pyjson.mjs: BigInt integers, Number floats, Map objects).

import { KEYS, LIMITS } from './definitions.mjs';
import { JsonError, TooDeep, dumps, floatRepr, loads, pyLen } from './pyjson.mjs';

const MAX_RANK = LIMITS.max_rank;              // data dimensions
const MAX_SIDE = BigInt(LIMITS.max_side);
const MAX_DIM = BigInt(LIMITS.max_dim);         // values per sample
export const MAX_DEPTH = LIMITS.max_depth;      // nesting of any value
const MAX_TEXT = LIMITS.max_text;               // characters in a string inside a value
const DEFAULT_MAX_BYTES = LIMITS.max_bytes;
const MAX_NAME = LIMITS.max_name;

const isDict = (v) => v instanceof Map;
// mirrors: fm_runtime/model/schema.py (_is_int)
const isInt = (v) => typeof v === 'bigint';
/** Python's f"{n:,}". */
const commas = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
const tooLong = (s) => s.length > MAX_TEXT && pyLen(s) > MAX_TEXT;
const textProblem = (s) => `holds a text of ${commas(pyLen(s))} characters (at most ${MAX_TEXT})`;

// mirrors: fm_runtime/model/schema.py (_show)
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

const MAX_FLOAT_INT = 2n ** BigInt(LIMITS.max_float_int_log2);   // integers beyond this do not fit a float64
// mirrors: fm_runtime/model/schema.py (_number)
const number = (v) => ((isInt(v) && (v < 0n ? -v : v) <= MAX_FLOAT_INT) || (typeof v === 'number' && Number.isFinite(v)) ? null
  : `must be a finite number, got ${show(v)}`);

// mirrors: fm_runtime/model/schema.py (_name)
const name = (v) => (typeof v === 'string' && v.length > 0 && pyLen(v) <= MAX_NAME ? null
  : `must be a graph input/output name (text, 1-${MAX_NAME} characters), got ${show(v)}`);

// mirrors: fm_runtime/model/schema.py (_integer)
const count = (low, high) => (v) => (isInt(v) && low <= v && v <= high ? null
  : `must be an integer from ${low} to ${high}, got ${show(v)}`);

// mirrors: fm_runtime/model/schema.py (is_symbol)
/** A dimension named by a symbol (T, L, ...) that each request binds. */
export const isSymbol = (v) => typeof v === 'string' && /^[A-Za-z_][A-Za-z0-9_]{0,31}$/.test(v);

// mirrors: fm_runtime/model/schema.py (_shape_of)
function shapeOf(v, low) {
  if (!Array.isArray(v) || v.length < low || v.length > MAX_RANK || v.some((s) => !isSymbol(s) && count(1n, MAX_SIDE)(s))) {
    return `must be a list of ${low} to ${MAX_RANK} positive integers or symbols (like T), got ${show(v)}`;
  }
  const prod = v.filter((s) => !isSymbol(s)).reduce((a, b) => a * b, 1n);
  return prod > MAX_DIM ? `declares ${commas(prod)} values per sample; this runtime takes at most ${commas(MAX_DIM)}` : null;
}
// mirrors: fm_runtime/model/schema.py (_data_shape)
const dataShape = (v) => shapeOf(v, 1);
// mirrors: fm_runtime/model/schema.py (_shape)
const shape = (v) => shapeOf(v, 0);

// mirrors: fm_runtime/model/schema.py (_tensor)
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

// mirrors: fm_runtime/model/schema.py (_info)
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

// mirrors: fm_runtime/model/schema.py (_base64)
const blob = (v) => (typeof v === 'string' ? null : `must be text (base64), got ${show(v)}`);

// mirrors: fm_runtime/model/schema.py (_tensors)
function tensors(v) {
  if (!isDict(v) || !v.size) return `must map input names to arrays, got ${show(v)}`;
  for (const [k, a] of v) {
    const p = name(k) || tensor(a);
    if (p) return `${k} ${p}`;
  }
  return null;
}

const FORMATS = { name, data_shape: dataShape, shape, tensor, tensors, base64: blob };
const TYPE_OK = {
  string: (v) => typeof v === 'string', null: (v) => v === null, integer: isInt, number: (v) => number(v) === null,
  object: isDict, array: Array.isArray,
};
const TYPE_WORD = { string: 'text', null: 'null', integer: 'an integer', object: 'an object', array: 'a list' };

// mirrors: fm_runtime/model/schema.py (_problem)
/** [field path, what is wrong] for the first mismatch, or null. */
function problemAt(value, schema, field) {
  if (schema.format !== undefined) {
    const found = FORMATS[schema.format](value);
    return found ? [field, found] : null;
  }
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  if (types.length === 1 && types[0] === 'number') {
    const found = number(value);
    return found ? [field, found] : null;
  }
  if (types.length === 1 && types[0] === 'integer') {
    const found = count(BigInt(schema.minimum), BigInt(schema.maximum))(value);
    return found ? [field, found] : null;
  }
  if (!types.some((t) => TYPE_OK[t](value))) {
    return [field, `must be ${types.map((t) => TYPE_WORD[t]).join(' or ')}, got ${show(value)}`];
  }
  if (typeof value === 'string' && tooLong(value)) return [field, textProblem(value)];
  if (typeof value === 'string' && schema.enum && !schema.enum.includes(value)) {
    return [field, `must be one of ${schema.enum.join(', ')}, got ${show(value)}`];
  }
  if (Array.isArray(value)) {
    if (schema.maxItems !== undefined && value.length > schema.maxItems) {
      return [field, `holds ${commas(value.length)} items (at most ${schema.maxItems})`];
    }
    for (let i = 0; i < value.length; i++) {
      const found = problemAt(value[i], schema.items, `${field}[${i}]`);
      if (found) return found;
    }
  }
  if (isDict(value)) {
    const properties = schema.properties ?? {}, required = schema.required ?? [];
    for (const [fname, sub] of Object.entries(properties)) {
      if (!value.has(fname)) {
        if (required.includes(fname)) return [`${field}.${fname}`, 'is missing'];
        continue;
      }
      const found = problemAt(value.get(fname), sub, `${field}.${fname}`);
      if (found) return found;
    }
    for (const [key, item] of value) {        // fields the schema does not name: "values", or described only
      if (Object.hasOwn(properties, key)) continue;
      if (schema.values !== undefined) {
        const found = problemAt(item, schema.values, `${field}.${key}`);
        if (found) return found;
        continue;
      }
      const found = info(item);
      if (found) return [`${field}.${key}`, found];
    }
  }
  return null;
}

// mirrors: fm_runtime/model/schema.py (problem)
/** [field, what is wrong] with `value` for contract key `key` (field '' is the value itself), or null. */
export function problem(key, value) {
  const schema = Object.hasOwn(KEYS, key) ? KEYS[key].schema : undefined;
  const found = schema === undefined ? ['', info(value)] : problemAt(value, schema, '');
  if (!found || !found[1]) return null;
  return [found[0].replace(/^\.+/, ''), found[1]];
}

// mirrors: fm_runtime/model/schema.py (describe)
/** A problem as the one line of text it is reported in. */
export const describe = ([field, what]) => (field ? `${field} ${what}` : what);

// mirrors: fm_runtime/model/schema.py (check)
/** What is wrong with `value` for contract key `key`, as text (null: nothing). */
export function check(key, value) {
  const found = problem(key, value);
  return found ? describe(found) : null;
}

// mirrors: fm_runtime/model/schema.py (decode)
/** [value, [field, problem] or null] for one key's raw metadata text: size, JSON and shape checked. */
export function decode(key, raw) {
  const limit = (Object.hasOwn(KEYS, key) && KEYS[key].max_bytes) || DEFAULT_MAX_BYTES;
  const size = raw.length > limit ? pyLen(raw) : raw.length;
  if (size > limit) return [null, ['', `is ${commas(size)} bytes, more than the ${commas(limit)} this key may hold`]];
  let value;
  try {
    value = loads(raw);
  } catch (e) {
    if (e instanceof TooDeep) return [null, ['', `is nested more than ${MAX_DEPTH} levels deep`]];
    if (e instanceof JsonError) return [null, ['', `is not valid JSON (${e.message.slice(0, 80)}): ${show(raw)}`]];
    throw e;
  }
  return [value, problem(key, value)];
}
