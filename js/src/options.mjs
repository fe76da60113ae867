// Request options as contract.json declares them ("options"), the same declaration the Python
// runtime builds its keywords, fm-run's options and the server's parameters from. An option's
// JavaScript name is its declared name in camelCase (guidance_interval: guidanceInterval).
// mirrors: fm_runtime/engine/options.py (take, check)

import { UsageError, show } from './errors.mjs';
import { CONTRACT } from './definitions.mjs';

export const DECLARED = CONTRACT.options.declared;

export const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
// mirrors: fm_runtime/engine/options.py (usage)
/** A refused option, named as JavaScript spells it. */
const usage = (name, message) => new UsageError(message, { key: camel(name), field: null });

// mirrors: fm_runtime/engine/options.py (lookup)
/** A number or a list as declared, or the value a dotted path names in contract.json. */
function lookup(value) {
  if (typeof value !== 'string') return value;
  return value.split('.').reduce((node, part) => node[part], CONTRACT);
}

// mirrors: fm_runtime/engine/options.py (offered)
/** The options `surface` offers for operation `op`: [[JavaScript name, declared name, entry]]. */
export function offered(surface, op) {
  return Object.entries(DECLARED).filter(([, e]) => (e[surface] ?? []).includes(op)).map(([name, e]) => [camel(name), name, e]);
}

// mirrors: fm_runtime/engine/options.py (real)
const real = (v) => typeof v === 'number';
// mirrors: fm_runtime/engine/options.py (text)
/** A bound as both runtimes write it: 2**63 for powers of two past 2**53, else 1000, 1e-12. */
const text = (b) => (b >= 2 ** 53 ? `2**${Math.round(Math.log2(b))}` : String(b));

// mirrors: fm_runtime/engine/options.py (_whole)
function whole(name, e, v) {
  const lo = lookup(e.minimum); const hi = lookup(e.maximum);
  const ok = (Number.isSafeInteger(v) || typeof v === 'bigint') && v >= lo && (e.exclusive_maximum ? v < hi : v <= hi);
  if (!ok && Number.isInteger(v) && !Number.isSafeInteger(v) && v >= lo && v < hi) {    // a Number past 2**53 is not exact
    throw usage(name, `${camel(name)} ${show(v)} is past 2**53, where a JavaScript Number is no longer exact: give it as a BigInt (${BigInt(v)}n, or the exact value)`);
  }
  if (!ok) throw usage(name, `${camel(name)} must be a whole number in [${text(lo)}, ${text(hi)}${e.exclusive_maximum ? ')' : ']'}, got ${show(v)}`);
  return v;
}

// mirrors: fm_runtime/engine/options.py (_number)
function number(name, e, v) {
  const lo = lookup(e.minimum); const hi = lookup(e.maximum);
  if (!real(v)) throw usage(name, `${camel(name)} must be a number, got ${show(v)}`);
  const lowOk = lo == null || (e.exclusive_minimum ? v > lo : v >= lo);
  if (!(Number.isFinite(v) && lowOk && (hi == null || v <= hi))) {
    throw usage(name, hi == null ? `${camel(name)} must be a finite number > ${text(lo)}, got ${show(v)}` : `${camel(name)} must be a finite number in [${text(lo)}, ${text(hi)}], got ${show(v)}`);
  }
  return v;
}

/** The allowed strings in words, grouped by kind where the choices have one (solvers).
 * mirrors: fm_runtime/engine/options.py (describe_choices) */
function describeChoices(choices) {
  if (Array.isArray(choices)) return choices.join(', ');
  const kinds = {};
  for (const [choice, entry] of Object.entries(choices)) (kinds[entry.evaluates === 'map' ? 'map' : entry.kind ?? ''] ??= []).push(choice);
  const words = { fixed: 'fixed steps', map: 'flow-map files' };
  return Object.entries(kinds).map(([k, c]) => `${c.join(', ')} (${words[k] ?? k})`).join(', ');
}

// mirrors: fm_runtime/engine/options.py (_string)
function string(name, e, v) {
  const choices = lookup(e.enum);
  const allowed = choices == null ? null : Array.isArray(choices) ? choices : Object.keys(choices);
  if (typeof v !== 'string' || (allowed && !allowed.includes(v))) {
    throw usage(name, allowed ? `unknown ${camel(name)} ${show(v)}; choose one of: ${describeChoices(choices)}` : `${camel(name)} must be a string, got ${show(v)}`);
  }
  return v;
}

// mirrors: fm_runtime/engine/options.py (_interval)
function interval(name, e, v) {
  const lo = lookup(e.minimum); const hi = lookup(e.maximum);
  if (typeof v === 'string') v = v.split(',').map(Number);
  if (!(Array.isArray(v) && v.length === 2 && v.every(real))) throw usage(name, `${camel(name)} must be two times (a, b), got ${show(v)}`);
  const [a, b] = v;
  if (!(lo <= a && a <= b && b <= hi)) throw usage(name, `${camel(name)} must satisfy ${text(lo)} <= a <= b <= ${text(hi)}, got (${a}, ${b})`);
  return [a, b];
}

// mirrors: fm_runtime/engine/options.py (_boolean)
function boolean(name, e, v) {
  if (typeof v !== 'boolean') throw usage(name, `${camel(name)} must be true or false, got ${show(v)}`);
  return v;
}

// mirrors: fm_runtime/engine/options.py (_token)
function signal(name, e, v) {
  if (!(typeof v === 'object' && typeof v.aborted === 'boolean')) throw usage(name, `${camel(name)} must be an AbortSignal, got ${show(v)}`);
  return v;
}

const CHECKS = { integer: whole, number, string, interval, boolean, signal };

// mirrors: fm_runtime/engine/options.py (check)
/** One option's value checked against its declaration (null/undefined: not given). */
export function check(name, value) {
  if (value == null) return null;
  const test = CHECKS[DECLARED[name].type];
  return test ? test(name, DECLARED[name], value) : value;
}

// mirrors: fm_runtime/engine/options.py (take)
/** Every option of `op` in JavaScript, by declared name: the given ones (JavaScript names)
 * checked, the others at their declared defaults; unknown names refused. */
export function take(op, given) {
  const table = offered('js', op);
  const names = Object.fromEntries(table.map(([js, name]) => [js, name]));
  const unknown = Object.keys(given).filter((k) => !Object.hasOwn(names, k));
  if (unknown.length) {
    throw new UsageError(`unknown option ${show(unknown[0])} (sample() takes ${table.map(([js]) => js).join(', ')})`, { key: unknown[0], field: null });
  }
  const out = Object.fromEntries(table.map(([, name, e]) => [name, e.default ?? null]));
  for (const [key, value] of Object.entries(given)) {
    if (value != null) out[names[key]] = check(names[key], value);
  }
  return out;
}

// mirrors: fm_runtime/engine/options.py (given)
const given = (name, value) => value != null && value !== (DECLARED[name].default ?? null);

// mirrors: fm_runtime/engine/options.py (check_rules)
/** The declared rules between options: conflicts, and options that apply to some solver kinds only. */
export function checkRules(opts, solver, solverKind) {
  for (const [name, value] of Object.entries(opts)) {
    if (!given(name, value)) continue;
    const e = DECLARED[name];
    for (const other of e.conflicts ?? []) {
      if (given(other, opts[other])) throw usage(name, `${camel(e.alias ?? name)} and ${camel(DECLARED[other].alias ?? other)} cannot be combined`);
    }
    if (e.solver_kinds && !e.solver_kinds.includes(solverKind)) {
      throw usage(name, CONTRACT.options.solver_kind_messages[solverKind].replace('{option}', camel(name)).replace('{solver}', solver));
    }
  }
}
