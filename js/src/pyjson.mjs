// JSON as the Python runtime reads and prints it (json.loads / json.dumps), so contract messages
// name the same values in the same words. Decoded values keep what Python keeps: a JSON integer is
// a BigInt (Python's int: 2 and 2.0 differ, 20 digits stay exact), a number with a fraction or
// exponent, NaN or Infinity is a Number (Python's float), an object is a Map (Python's key order,
// the last of duplicate keys), plus strings, booleans, null and arrays.

/** What json.loads raises as ValueError (a syntax error, an integer past Python's digit limit). */
export class JsonError extends Error {}
/** Nesting past what Python's reader and writer recurse through (its RecursionError). */
export class TooDeep extends Error {}

// Python's recursion limit (1000) less the frames the loader stands on; where exactly CPython
// stops depends on the call stack, so values nested 980-995 deep may be refused differently.
export const MAX_NESTING = 985;
const MAX_INT_DIGITS = 4300;      // sys.get_int_max_str_digits()
const ESCAPES = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
const SHORT = { '"': '\\"', '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

const isDigit = (c) => c >= '0' && c <= '9';
/** Python's len(): code points, a lone surrogate counting one. */
export function pyLen(s) {
  let n = s.length;
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c < 0xdc00 && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) { n--; i++; }
  }
  return n;
}

/** json.loads(s), raising JsonError with CPython 3.11's message or TooDeep. */
export function loads(s) {
  const fail = (msg, pos) => {
    const before = s.slice(0, pos), nl = before.lastIndexOf('\n');
    const line = before.split('\n').length, col = nl < 0 ? pyLen(before) + 1 : pyLen(before.slice(nl));
    return new JsonError(`${msg}: line ${line} column ${col} (char ${pyLen(before)})`);
  };
  const last = s.length - 1;
  const ws = (i) => { while (i <= last && ' \t\n\r'.includes(s[i])) i++; return i; };

  function string(end) {          // end: just past the opening quote
    const begin = end - 1;
    let out = '';
    for (;;) {
      let next = end;
      for (; next <= last && s[next] !== '"' && s[next] !== '\\'; next++) {
        if (s.charCodeAt(next) <= 0x1f) throw fail('Invalid control character at', next);
      }
      if (next > last) throw fail('Unterminated string starting at', begin);
      out += s.slice(end, next);
      if (s[next++] === '"') return [out, next];
      if (next > last) throw fail('Unterminated string starting at', begin);
      if (s[next] !== 'u') {
        end = next + 1;
        if (!(s[next] in ESCAPES)) throw fail('Invalid \\escape', end - 2);
        out += ESCAPES[s[next]];
        continue;
      }
      end = next + 5;
      if (end > last) throw fail('Invalid \\uXXXX escape', next);
      const hex4 = (at) => (/^[0-9a-fA-F]{4}$/.test(s.slice(at, at + 4)) ? parseInt(s.slice(at, at + 4), 16) : -1);
      let c = hex4(next + 1);
      if (c < 0) throw fail('Invalid \\uXXXX escape', next);
      if (c >= 0xd800 && c < 0xdc00 && end + 6 <= last && s[end] === '\\' && s[end + 1] === 'u') {
        const c2 = hex4(end + 2);
        if (c2 < 0) throw fail('Invalid \\uXXXX escape', end + 1);
        if (c2 >= 0xdc00 && c2 < 0xe000) { out += String.fromCharCode(c); c = c2; end += 6; }
      }
      out += String.fromCharCode(c);
    }
  }

  function number(i) {
    const start = i;
    let isFloat = false;
    if (s[i] === '-' && ++i > last) throw fail('Expecting value', start);
    if (s[i] >= '1' && s[i] <= '9') { while (isDigit(s[++i])); } else if (s[i] === '0') i++;
    else throw fail('Expecting value', start);
    if (i < last && s[i] === '.' && isDigit(s[i + 1])) { isFloat = true; i += 2; while (isDigit(s[i])) i++; }
    if (i < last && (s[i] === 'e' || s[i] === 'E')) {
      const e = i++;
      if (i < last && (s[i] === '-' || s[i] === '+')) i++;
      while (isDigit(s[i])) i++;
      if (isDigit(s[i - 1])) isFloat = true; else i = e;
    }
    const text = s.slice(start, i);
    if (isFloat) return [Number(text), i];
    const digits = text.length - (text[0] === '-' ? 1 : 0);
    if (digits > MAX_INT_DIGITS) {
      throw new JsonError(`Exceeds the limit (${MAX_INT_DIGITS} digits) for integer string conversion: value has ${digits} digits; use sys.set_int_max_str_digits() to increase the limit`);
    }
    return [BigInt(text), i];
  }

  function container(i, depth, close) {   // i: just past '[' or '{'
    if (depth > MAX_NESTING) throw new TooDeep();
    const out = close === ']' ? [] : new Map();
    i = ws(i);
    if (i <= last && s[i] === close) return [out, i + 1];
    for (;;) {
      let key, item;
      if (close === '}') {
        if (s[i] !== '"') throw fail('Expecting property name enclosed in double quotes', i);
        [key, i] = string(i + 1);
        i = ws(i);
        if (s[i] !== ':') throw fail("Expecting ':' delimiter", i);
        i = ws(i + 1);
      }
      [item, i] = value(i, depth);
      if (close === '}') out.set(key, item); else out.push(item);
      i = ws(i);
      if (s[i] === close) return [out, i + 1];
      if (s[i] !== ',') throw fail("Expecting ',' delimiter", i);
      i = ws(i + 1);
    }
  }

  function value(i, depth) {
    if (i > last) throw fail('Expecting value', i);
    const c = s[i];
    if (c === '"') return string(i + 1);
    if (c === '[') return container(i + 1, depth + 1, ']');
    if (c === '{') return container(i + 1, depth + 1, '}');
    for (const [word, v] of [['null', null], ['true', true], ['false', false], ['NaN', NaN],
      ['Infinity', Infinity], ['-Infinity', -Infinity]]) {
      if (s.startsWith(word, i)) return [v, i + word.length];
    }
    return number(i);
  }

  if (s.startsWith('\ufeff')) throw fail('Unexpected UTF-8 BOM (decode using utf-8-sig)', 0);
  const [v, end] = value(ws(0), 0);
  if (ws(end) !== s.length) throw fail('Extra data', ws(end));
  return v;
}

/** repr() of a Python float: shortest round-trip digits, exponent form below 1e-4 and from 1e16. */
export function floatRepr(v) {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf';
  if (v === 0) return Object.is(v, -0) ? '-0.0' : '0.0';
  const [mantissa, e] = Math.abs(v).toExponential().split('e');
  const sign = v < 0 ? '-' : '', digits = mantissa.replace('.', ''), exp = Number(e), point = exp + 1;
  if (exp < -4 || exp >= 16) {
    return `${sign}${digits[0]}${digits.length > 1 ? '.' + digits.slice(1) : ''}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
  if (point >= digits.length) return `${sign}${digits}${'0'.repeat(point - digits.length)}.0`;
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

const quote = (s) => `"${s.replace(/[^ -~]|["\\]/g, (c) => SHORT[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}"`;

/** json.dumps(v) with Python's defaults (", " and ": ", ASCII only, NaN and Infinity allowed). */
export function dumps(v, depth = 0) {
  if (depth > MAX_NESTING) throw new TooDeep();
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') return Number.isFinite(v) ? floatRepr(v) : Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity';
  if (typeof v === 'string') return quote(v);
  if (Array.isArray(v)) return `[${v.map((x) => dumps(x, depth + 1)).join(', ')}]`;
  return `{${Array.from(v, ([k, x]) => `${quote(k)}: ${dumps(x, depth + 1)}`).join(', ')}}`;
}

/** A decoded value as plain JavaScript: Numbers for integers, objects for Maps. */
export function plain(v) {
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Map) return Object.fromEntries(Array.from(v, ([k, x]) => [k, plain(x)]));
  return v;
}
