// The shape of every contract value, checked before the sampler uses it: an interpreter of the
// schemas in fm_runtime/contract.json, the same file and the same messages as the Python runtime's
// fm_runtime/model/schema.py (see there for the schema forms and the rules between keys). Values
// are decoded as Python decodes them (pyjson.mjs: BigInt integers, Number floats, Map objects).

import { CONTRACT, KEYS, LIMITS } from './definitions.mjs';
import { JsonError, TooDeep, dumps, floatRepr, loads, pyLen } from './pyjson.mjs';
import { parseSchedule } from './schedules.mjs';

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
// mirrors: fm_runtime/model/schema.py (_text_problem)
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

// mirrors: fm_runtime/model/schema.py (_schedule)
/** A time schedule (schedules.mjs) this runtime can build. */
function schedule(v) {
  if (typeof v !== 'string' || tooLong(v)) return `must be a schedule (text such as uniform or shift:3), got ${show(v)}`;
  try {
    parseSchedule(v);
  } catch (e) {
    return `is not a schedule this runtime can build: ${e.message}`;
  }
  return null;
}

const FORMATS = { name, data_shape: dataShape, shape, tensor, tensors, base64: blob, schedule };
const TYPE_OK = {
  string: (v) => typeof v === 'string', null: (v) => v === null, integer: isInt, number: (v) => number(v) === null,
  object: isDict, array: Array.isArray,
};
const TYPE_WORD = { string: 'text', null: 'null', integer: 'an integer', object: 'an object', array: 'a list' };

// mirrors: fm_runtime/model/schema.py (lookup)
/** The value at a dotted path into contract.json ('solvers.max_steps'). */
export const lookup = (path) => path.split('.').reduce((v, part) => v[part], CONTRACT);
// mirrors: fm_runtime/model/schema.py (_bound)
const bound = (b) => BigInt(typeof b === 'string' ? lookup(b) : b);

// mirrors: fm_runtime/model/schema.py (choices)
/** The strings an "enum" allows: its list, or the keys of the object it names (those whose fields match "enum_where"). */
export function choices(schema) {
  const found = typeof schema.enum === 'string' ? lookup(schema.enum) : schema.enum;
  if (Array.isArray(found)) return found;
  const where = Object.entries(schema.enum_where ?? {});
  return Object.keys(found).filter((k) => where.every(([f, want]) => found[k][f] === want));
}

function stringProblem(value, schema) {
  if (tooLong(value)) return textProblem(value);
  if (schema.enum !== undefined && !choices(schema).includes(value)) return `must be one of ${choices(schema).join(', ')}, got ${show(value)}`;
  return null;
}

// mirrors: fm_runtime/model/schema.py (_list_problem)
function listProblem(value, schema, field) {
  if (schema.maxItems !== undefined && value.length > schema.maxItems) {
    return [field, `holds ${commas(value.length)} items (at most ${schema.maxItems})`];
  }
  for (let i = 0; i < value.length; i++) {
    const found = problemAt(value[i], schema.items, `${field}[${i}]`);
    if (found) return found;
  }
  if (value.length < (schema.minItems ?? 0)) return [field, `holds ${commas(value.length)} items (at least ${schema.minItems}), got ${show(value)}`];
  if (schema.increasing && value.some((v, i) => i > 0 && value[i - 1] >= v)) {
    return [field, `must be increasing (each item greater than the one before), got ${show(value)}`];
  }
  return null;
}

// mirrors: fm_runtime/model/schema.py (_object_problem)
function objectProblem(value, schema, field) {
  const properties = schema.properties ?? {}, required = schema.required ?? [], oneOf = schema.one_of ?? [];
  for (const [fname, sub] of Object.entries(properties)) {
    const found = value.has(fname) ? problemAt(value.get(fname), sub, `${field}.${fname}`)
      : required.includes(fname) ? [`${field}.${fname}`, 'is missing'] : null;
    if (found) return found;
  }
  if (value.size && oneOf.length && !oneOf.some((n) => value.has(n))) return [field, `must hold ${oneOf.join(' or ')}, got ${show(value)}`];
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
  return null;
}

// mirrors: fm_runtime/model/schema.py (_problem)
/** [field path, what is wrong] for the first mismatch, or null. */
function problemAt(value, schema, field) {
  const types = schema.format !== undefined ? [schema.format] : Array.isArray(schema.type) ? schema.type : [schema.type];
  const only = types.length === 1 ? types[0] : null;
  if (schema.format !== undefined || only === 'number' || only === 'integer') {
    const found = schema.format !== undefined ? FORMATS[schema.format](value) : only === 'number' ? number(value)
      : count(bound(schema.minimum), bound(schema.maximum))(value);
    return found ? [field, found] : null;
  }
  if (!types.some((t) => TYPE_OK[t](value))) {
    return [field, `must be ${types.map((t) => TYPE_WORD[t]).join(' or ')}, got ${show(value)}`];
  }
  if (typeof value === 'string') {
    const found = stringProblem(value, schema);
    return found ? [field, found] : null;
  }
  if (Array.isArray(value)) return listProblem(value, schema, field);
  return isDict(value) ? objectProblem(value, schema, field) : null;
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

const RULES = CONTRACT.rules ?? [];

// mirrors: fm_runtime/model/schema.py (_at)
/** The value at 'key' or 'key.field' in a file's values (decoded as Python does; null when it is not there). */
function at(values, path) {
  const [key, ...fields] = path.split('.');
  let value = Object.hasOwn(values, key) ? values[key] : null;
  for (const f of fields) value = isDict(value) && value.has(f) ? value.get(f) : null;
  return value;
}

/** Python's truth of a value: not 0, empty or null. */
const truthy = (v) => !(v === null || v === false || v === 0 || v === 0n || v === '' || (Array.isArray(v) && !v.length) || (isDict(v) && !v.size));

// mirrors: fm_runtime/model/schema.py (_rule_text)
/** What is wrong with `value` under one rule, against the value `other` it names. */
function ruleText(rule, value, other) {
  if (rule.at_most !== undefined && value > other) return `must be at most fm.${rule.at_most} (${show(other)}), got ${show(value)}`;
  if (rule.at_least !== undefined && value < other) return `must be at least fm.${rule.at_least} (${show(other)}), got ${show(value)}`;
  if (rule.steps_agree_with !== undefined) {
    const steps = parseSchedule(value).steps;
    if (steps !== null && BigInt(steps) !== BigInt(other)) {
      return `fixes ${steps} steps, but the file's steps (fm.${rule.steps_agree_with}) are ${show(other)}`;
    }
  }
  return null;
}

// mirrors: fm_runtime/model/schema.py (rule_problem)
/**
 * [key, field, what is wrong] for the first of contract.json's "rules" that `values` (every key's value
 * or default, decoded as Python does, each fitting its schema) break; null: they keep them all.
 * The same rules as fm_runtime/model/schema.py rule_problem.
 */
export function ruleProblem(values) {
  for (const rule of RULES) {
    if (rule.needs !== undefined) {
      const value = at(values, rule.key);
      if (rule.kinds.includes(at(values, 'kind')) && choices(rule.when_in).includes(value) && at(values, rule.needs) === null) {
        return [rule.key, '', `fm.${rule.key} ${show(value)} needs fm.${rule.needs}, which this file does not set`];
      }
      continue;
    }
    const value = at(values, rule.key), other = at(values, rule.at_most ?? rule.at_least ?? rule.steps_agree_with);
    if (value === null || other === null || (rule.when !== undefined && !truthy(at(values, rule.when)))) continue;
    const found = ruleText(rule, value, other);
    if (found) {
      const [key, ...field] = rule.key.split('.');
      return [key, field.join('.'), `fm.${rule.key} ${found}`];
    }
  }
  return null;
}
