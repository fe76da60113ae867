// Time schedules: where a fixed-step solve places its steps between noise (t = 0) and data
// (t = 1), as fm_runtime/solve/schedules.py: uniform, shift:S, sway:S, cosine and explicit times
// "times:0,...,1", parsed with the same refusals and messages, and the same float64 grids (exact
// ends, the same order of operations).

import { CONTRACT } from './definitions.mjs';
import { show } from './errors.mjs';

const BOUNDS = CONTRACT.schedules;
const SHIFT_MAX = BOUNDS.shift_max, SWAY_MIN = BOUNDS.sway_min;
export const SWAY_MAX = BOUNDS.sway_max;      // 1 / (pi / 2 - 1): above it sway's grid is no longer increasing
export const MAX_TIMES = BOUNDS.max_times;
const END_TOLERANCE = BOUNDS.end_tolerance;

/** A float as Python's repr() writes it (1e-05, 1e+16, 3.0, inf, nan). */
export function pyRepr(v) {
  if (Number.isNaN(v)) return 'nan';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  if (v === 0) return Object.is(v, -0) ? '-0.0' : '0.0';
  const [mant, exp] = Math.abs(v).toExponential().split('e');
  const e = Number(exp), sign = v < 0 ? '-' : '';
  if (e < -4 || e >= 16) return `${sign}${mant}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
  const s = String(v);
  return s.includes('.') ? s : `${s}.0`;
}

// mirrors: fm_runtime/solve/schedules.py (_num)
const num = (v) => { const s = pyRepr(v); return s.endsWith('.0') ? s.slice(0, -2) : s; };

const FLOAT = /^[+-]?(?:(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?|inf(?:inity)?|nan)$/i;

/** Python's float(text): the same accepted spellings, the same error message. */
export function pyFloat(text) {
  const t = text.trim();
  if (!FLOAT.test(t)) throw new Error(`could not convert string to float: ${show(text)}`);
  const low = t.toLowerCase().replace(/^[+-]/, '');
  if (low.startsWith('inf')) return t.startsWith('-') ? -Infinity : Infinity;
  if (low === 'nan') return NaN;
  return Number(t.replace(/_/g, ''));
}

const PY_TYPE = (v) => (v === null || v === undefined ? 'NoneType' : typeof v === 'string' ? 'str'
  : Array.isArray(v) ? 'list' : typeof v === 'object' ? 'dict' : typeof v);

function toFloat(v) {
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return Number(v);
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'string') return pyFloat(v);
  throw new Error(`float() argument must be a string or a real number, not '${PY_TYPE(v)}'`);
}

export class Schedule {
  constructor(name = 'uniform', value = null, times = []) {
    Object.assign(this, { name, value, times: Object.freeze([...times]) });
    Object.freeze(this);
  }

  // mirrors: fm_runtime/solve/schedules.py (Schedule.__str__)
  toString() {
    if (this.name === 'times') return 'times:' + this.times.map(num).join(',');
    return this.value === null ? this.name : `${this.name}:${num(this.value)}`;
  }

  /** The number of steps an explicit grid fixes (null: any). */
  get steps() { return this.name === 'times' ? this.times.length - 1 : null; }

  get uniform() { return this.name === 'uniform'; }

  // mirrors: fm_runtime/solve/schedules.py (Schedule.at)
  /** The schedule's time for uniform time u in [0, 1] (not for explicit grids). */
  at(u) {
    const s = this.value;
    if (this.name === 'shift') return s * u / (1 + (s - 1) * u);
    if (this.name === 'sway') return u + s * (Math.cos(Math.PI / 2 * u) - 1 + u);
    if (this.name === 'cosine') return (1 - Math.cos(Math.PI * u)) / 2;
    return u;
  }

  // mirrors: fm_runtime/solve/schedules.py (Schedule.grid)
  /** The steps + 1 times from t0 to t1 (float64, exact ends); a backward solve steps through the
   * forward grid of [t1, t0] in reverse. */
  grid(steps, t0 = 0, t1 = 1) {
    if (this.name === 'times' && steps !== this.steps) {
      throw new Error(`the explicit time grid has ${this.steps} steps, not ${steps}`);
    }
    if (this.uniform) {
      const h = (t1 - t0) / steps, out = [];
      for (let i = 0; i < steps; i++) out.push(t0 + i * h);
      out.push(t1);
      return out;
    }
    const lo = Math.min(t0, t1), hi = Math.max(t0, t1);
    const unit = this.name === 'times' ? [...this.times] : Array.from({ length: steps + 1 }, (_, i) => this.at(i / steps));
    const grid = [lo, ...unit.slice(1, -1).map((t) => lo + (hi - lo) * t), hi];
    return t0 <= t1 ? grid : grid.reverse();
  }
}

export const UNIFORM = new Schedule();

// mirrors: fm_runtime/solve/schedules.py (parse_schedule)
/**
 * A Schedule from null (uniform), a Schedule, a string ("uniform", "shift:3", "sway:-1",
 * "cosine", "times:0,0.5,1") or an array of times. Throws Error naming what is wrong, with
 * Python's messages (callers wrap it in their own error class).
 */
export function parseSchedule(spec) {
  if (spec === null || spec === undefined) return UNIFORM;
  if (spec instanceof Schedule) return spec;
  if (typeof spec !== 'string') {
    let times;
    try {
      if (!(Array.isArray(spec) || ArrayBuffer.isView(spec))) {
        throw new Error(`'${typeof spec === 'number' ? (Number.isInteger(spec) ? 'int' : 'float') : PY_TYPE(spec)}' object is not iterable`);
      }
      times = Array.from(spec, toFloat);
    } catch (e) {
      throw new Error(`a time grid must be a sequence of numbers: ${e.message}`);
    }
    return explicit(times);
  }
  const trimmed = spec.trim(), at = trimmed.indexOf(':');
  const name = at < 0 ? trimmed : trimmed.slice(0, at), colon = at >= 0, arg = at < 0 ? '' : trimmed.slice(at + 1);
  if (name === 'times') return parseTimes(arg);
  if (name === 'uniform' || name === 'cosine') {
    if (colon) throw new Error(`schedule ${show(name)} takes no parameter, got ${show(spec)}`);
    return new Schedule(name);
  }
  if (name === 'shift' || name === 'sway') {
    let value;
    try {
      value = pyFloat(arg);
    } catch {
      throw new Error(`schedule ${name} needs a number, e.g. ${name}:${name === 'shift' ? '3' : '-1'}; got ${show(spec)}`);
    }
    if (name === 'shift' && !(Number.isFinite(value) && value >= 1 / SHIFT_MAX && value <= SHIFT_MAX)) {
      throw new Error(`shift:S needs 1/${SHIFT_MAX} <= S <= ${SHIFT_MAX}, got ${show(spec)}`);
    }
    if (name === 'sway' && !(value >= SWAY_MIN && value <= SWAY_MAX)) {
      throw new Error(`sway:S needs -1 <= S <= ${SWAY_MAX.toFixed(4)} (beyond, its times are not increasing), got ${show(spec)}`);
    }
    return new Schedule(name, value);
  }
  throw new Error(`unknown schedule ${show(spec)}; choose uniform, shift:S, sway:S, cosine, or explicit times 0,...,1`);
}

// mirrors: fm_runtime/solve/schedules.py (parse_times)
/** An explicit grid from "0,0.1,...,1". */
export function parseTimes(text) {
  try {       // as Python's: the grid's own refusals read inside this message too
    return explicit(text.split(',').map(pyFloat));
  } catch (e) {
    throw new Error(`times must be comma-separated numbers from 0 to 1, e.g. 0,0.4,1 (${e.message})`);
  }
}

// mirrors: fm_runtime/solve/schedules.py (_explicit)
function explicit(times) {
  if (!(times.length >= 2 && times.length <= MAX_TIMES)) {
    throw new Error(`an explicit time grid needs 2 to ${MAX_TIMES} times, got ${times.length}`);
  }
  if (Math.abs(times[0]) <= END_TOLERANCE && Math.abs(times[times.length - 1] - 1) <= END_TOLERANCE) {
    times = [0, ...times.slice(1, -1), 1];      // a computed grid's ends (0.9999999999999999) are 0 and 1
  }
  if (times[0] !== 0 || times[times.length - 1] !== 1) {
    throw new Error(`an explicit time grid runs from 0 to 1, got ${num(times[0])} ... ${num(times[times.length - 1])}`);
  }
  if (!times.every(Number.isFinite) || times.some((t, i) => i > 0 && !(t > times[i - 1]))) {
    throw new Error('an explicit time grid must be strictly increasing');
  }
  return new Schedule('times', null, times);
}
