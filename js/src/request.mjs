// One request, built once: the model's defaults applied and every argument of sample() checked in
// one place, with the same errors as the Python runtime's fm_runtime/engine/request.py (whose
// Request and sampling_request this mirrors by name): UsageError for values the caller chose,
// InputError for noise.

import { InputError, UsageError, show } from './errors.mjs';
import { bindInputs, guiding, perRow } from './conditions.mjs';
import { CONTRACT } from './definitions.mjs';
import { MAX_STEPS, SOLVERS } from './solvers.mjs';
import { parseSchedule } from './schedules.mjs';

/** A refused request argument: `key` names it (n, steps, cond, ...), `field` what inside it. */
const usage = (key, message, field = null) => new UsageError(message, { key, field });
/** An unusable array of a request (noise, a condition). */
const badInput = (key, message, field = null) => new InputError(message, { key, field });

const OPTIONS = ['n', 'steps', 'solver', 'schedule', 'noise', 'labels', 'guidance', 'seed', 'cond', 'dims', 'guidanceInterval',
  'guidanceCalls', 'timeoutMs', 'signal'];
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
    // the contract's seeds, as in Python: a Number up to 2**53, or a BigInt up to 2**63
    const whole = (isWhole(seed) && seed <= Number.MAX_SAFE_INTEGER) || (typeof seed === 'bigint' && seed < 2n ** 63n);
    if (seed != null && !(whole && seed >= 0)) {
      throw usage('seed', `seed must be a whole number in [0, 2**63), got ${show(seed)}`);
    }
  }
  const kind = spec.kind === 'baked' ? 'baked' : CONTRACT.solvers.methods[solver].kind;
  const { timeoutMs = null, signal = null } = options;
  if (timeoutMs != null && !(typeof timeoutMs === 'number' && timeoutMs > 0 && Number.isFinite(timeoutMs))) {
    throw usage('timeoutMs', `timeoutMs must be a number of milliseconds > 0, got ${show(timeoutMs)}`);
  }
  if (signal != null && !(typeof signal === 'object' && typeof signal.aborted === 'boolean')) {
    throw usage('signal', `signal must be an AbortSignal, got ${show(signal)}`);
  }
  const rowsIn = perRow(inputs, n);
  return { n, kind, spec: bound, solver, steps, schedule, labels: checkLabels(spec, where, labels, n), guidance, seed, noise,
    timeoutMs, signal, inputs: rowsIn, ...guiding(bound, guidance, rowsIn, staged, n, options.guidanceInterval, options.guidanceCalls ?? 'batched') };
}
