// One request, built once: the model's defaults applied and every argument of sample() checked in
// one place, with the same errors as the Python runtime's fm_runtime/engine/request.py (whose
// Request and sampling_request this mirrors by name): UsageError for values the caller chose,
// InputError for noise.

import { InputError, UsageError, show } from './errors.mjs';
import { bindInputs, givenNulls, guiding, perRow } from './conditions.mjs';
import { CONTRACT } from './definitions.mjs';
import { DEFAULT_STEPS, SOLVERS } from './solvers.mjs';
import { parseSchedule } from './schedules.mjs';
import { checkRules, take } from './options.mjs';

/** A refused request argument: `key` names it (n, steps, cond, ...), `field` what inside it. */
const usage = (key, message, field = null) => new UsageError(message, { key, field });
/** An unusable array of a request (noise, a condition). */
const badInput = (key, message, field = null) => new InputError(message, { key, field });


// mirrors: fm_runtime/engine/request.py (check_schedule)
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

// mirrors: fm_runtime/engine/request.py (check_baked_guidance)
/** A baked file guides, if at all, on every step against the nulls built into its graph. */
function checkBakedGuidance(where, interval, nullCond) {
  if (interval != null) {
    throw usage('guidanceInterval', `${where} is a baked sampler: its graph guides on every step (sample the velocity file to guide on an interval)`);
  }
  if (nullCond && Object.keys(nullCond).length) {
    throw usage('nullCond', `${where} is a baked sampler: its graph guides against the nulls built into it (sample the velocity file to guide against a negative prompt)`);
  }
}

// mirrors: fm_runtime/engine/request.py (check_guided)
function checkGuided(guidance, labels, spec, nullCond = null) {
  const guidable = spec.inputs.some((i) => i.null || i.role === 'guidance');
  if (guidance !== 1 && spec.kind === 'baked' && spec.inputs.length && !guidable) {
    throw usage('guidance', `guidance ${guidance}: this baked file was written without guidance (it has no guidance input); export it with --bake-guidance, or sample the velocity file`);
  }
  if (guidance !== 1 && labels == null && !guidable && !(nullCond && Object.keys(nullCond).length)) {
    throw usage('guidance', `guidance ${guidance} needs labels (it weighs the conditional against the unconditional velocity)`);
  }
}

// mirrors: fm_runtime/engine/request.py (check_noise)
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

// mirrors: fm_runtime/engine/request.py (check_labels)
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

// mirrors: fm_runtime/engine/request.py (negative_prompt)
/** A request's nullCond (the negative prompt), already through the condition stage where it gave
 * the stage's inputs (Sampler.sampleHere): refused unless guidance weighs it. */
function negativePrompt(spec, given, guidance) {
  if (given && Object.keys(given).length && (guidance === 1 || spec.inputs.some((i) => i.role === 'guidance'))) {
    throw usage('nullCond', 'nullCond is what guidance weighs the conditions against; it needs guidance other than 1 (and a file that does not take the weight as an input)');
  }
  return given ?? {};
}

// mirrors: fm_runtime/engine/request.py (map_solver)
/** The steps of a request that gives none, under the flow-map rules: a method that evaluates a flow
 * map (jump) needs a flow-map file (fm.input_s), and a velocity solver on a flow map whose steps are
 * counted in jumps takes the contract's default steps, not the file's jumps. The JavaScript sampler
 * gives no log-likelihoods, so Python's rule for those (log p needs u(x, t, t)) has no twin. */
export function mapSolver(spec, where, solver, steps = null) {
  const methods = CONTRACT.solvers.methods;
  if (spec.kind !== 'baked' && methods[solver].evaluates === 'map' && !spec.sName) {
    const velocity = Object.keys(methods).filter((k) => methods[k].evaluates !== 'map').join(', ');
    throw usage('solver', `${solver} jumps with a flow map u(x, s, t); ${where} is a velocity model (no fm.input_s): use one of ${velocity}`);
  }
  if (steps != null) return steps;
  const jumps = spec.kind !== 'baked' && spec.sName && methods[spec.defaultSolver].evaluates === 'map' && methods[solver].evaluates !== 'map';
  return jumps ? DEFAULT_STEPS : spec.defaultSteps;
}

/** A request {n, steps, solver, schedule, noise, labels, guidance, seed, ...} (the options contract.json
 * declares for JavaScript), checked: the Request {n, kind, solver, steps, schedule (a Schedule), labels
 * (BigInt64Array [n] or null), guidance, seed, noise (Float32Array or null), ...}; kind is the solver's
 * kind in contract.json's registry, or "baked".
 * mirrors: fm_runtime/engine/request.py (resolve) */
export function samplingRequest(spec, where, options, staged = {}) {
  if (options === null || typeof options !== 'object') throw usage('options', `sample() takes an options object, got ${show(options)}`);
  const o = take('sample', options);
  let { n, steps, solver, schedule, noise } = o;
  solver ??= spec.kind === 'baked' ? spec.baked.solver : spec.defaultSolver;
  const defaultSteps = mapSolver(spec, where, solver);
  const kind = CONTRACT.solvers.methods[solver].kind;
  checkRules(o, solver, kind);
  if (kind === 'adaptive') {
    throw usage('solver', `the adaptive solver ${solver} runs in the Python runtime only; the JavaScript sampler takes a fixed-step solver: ${Object.keys(SOLVERS).join(', ')}`);
  }
  if (spec.kind === 'baked') {
    const b = spec.baked;
    if (schedule != null && String(checkSchedule(spec, schedule, null)[0]) !== spec.defaultSchedule) {
      throw usage('schedule', `${where} is a baked sampler on the ${spec.defaultSchedule} time schedule; it cannot run another (export another --bake with --schedule)`);
    }
    if ((steps != null && steps !== b.steps) || (o.solver != null && o.solver !== b.solver)) {
      throw usage('solver', `${where} is a baked ${b.solver}:${b.steps} sampler; it cannot run ${o.solver ?? b.solver}:${steps ?? b.steps} (export another --bake)`);
    }
    checkBakedGuidance(where, o.guidance_interval, o.null_cond);
  }
  [schedule, steps] = checkSchedule(spec, schedule, steps);
  steps ??= defaultSteps;
  const { guidance, labels, seed } = o;
  checkGuided(guidance, labels, spec, o.null_cond);
  const negative = negativePrompt(spec, o.null_cond, guidance);
  const [bound, inputs, rows] = bindInputs(spec, where, o.cond, o.dims, n);
  if (noise != null) {
    noise = checkNoise(bound, noise, n);
    n = noise.length / bound.dim;
    if (rows != null && rows !== n) throw usage('n', `the noise has ${n} rows but the per-row conditions have ${rows}`);
  } else if (n == null && rows == null) {
    throw usage('n', 'give n (how many samples) or noise (the starting points)');
  } else {
    n ??= rows;
  }
  const rowsIn = perRow(inputs, n);
  const guide = guiding(bound, guidance, rowsIn, staged, n, o.guidance_interval, o.guidance_calls);
  Object.assign(guide.nulls, givenNulls(bound, where, negative, rowsIn, n));
  return { n, kind: spec.kind === 'baked' ? 'baked' : kind, spec: bound, solver, steps, schedule, labels: checkLabels(spec, where, labels, n),
    guidance, seed, noise, timeoutMs: o.timeout_ms, signal: o.signal, inputs: rowsIn, options: o, ...guide };
}
