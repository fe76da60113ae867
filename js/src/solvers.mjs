// Fixed-step solvers as Butcher tableaus, the same methods, grid and order of operations as the
// Python runtime (fm_runtime/solve/solvers.py), read from the same tableaus in fm_runtime/contract.json. Every float32 operation is rounded like numpy's float32
// arithmetic (Math.fround after each multiply and add), so the two runtimes agree to the last
// bits the network's own kernels allow. The grid comes from a time schedule (schedules.mjs).

import { CONTRACT } from './definitions.mjs';
import { parseSchedule } from './schedules.mjs';

const REGISTRY = CONTRACT.solvers;
/** The fixed-step methods of contract.json's solver registry (dopri5, kind "adaptive", is Python-only). */
export const SOLVERS = Object.fromEntries(Object.entries(REGISTRY.methods).filter(([, m]) => m.kind === 'fixed')
  .map(([name, m]) => [name, { name, evalsPerStep: m.evals_per_step, order: m.order, c: m.c, a: m.a, b: m.b,
    evaluates: m.evaluates ?? 'velocity' }]));
export const DEFAULT_SOLVER = CONTRACT.keys.default_solver.default;     // a file's defaults when it names none
export const DEFAULT_STEPS = CONTRACT.keys.default_steps.default;
export const MAX_STEPS = REGISTRY.max_steps;

// mirrors: fm_runtime/solve/solvers.py (nfe)
export function nfe(solver, steps) {
  return SOLVERS[solver].evalsPerStep * steps;
}

// mirrors: fm_runtime/solve/solvers.py (time_grid)
/** The grid t0 = t_0, ..., t_steps = t1 of a schedule (null: uniform), in float64 (exact ends). */
export function timeGrid(steps, t0 = 0, t1 = 1, schedule = null) {
  return parseSchedule(schedule).grid(steps, t0, t1);
}

const fround = Math.fround;

/** out += k * c in float32 (numpy: multiply(k, c, out=scratch); out += scratch). The product of
 * two float32s is exact in float64, so fround gives numpy's float32 product; the sum is rounded by
 * the Float32Array store (float64 then float32 rounds a sum of two float32s as float32 does). */
function axpy(out, k, c) {
  const cf = fround(c), n = out.length;
  for (let i = 0; i < n; i++) out[i] += fround(k[i] * cf);
}

// mirrors: fm_runtime/solve/solvers.py (integrate_inplace, stepping, tableau_step)
/**
 * Solve dx/dt = f(x, t) from 0 to 1 in `steps` steps on the grid of `schedule` (schedules.mjs;
 * null: uniform), updating a copy of x0 (a
 * Float32Array) in place. f(x, t) returns a Float32Array (or a promise of one) of x's length.
 * A method that evaluates a flow map (jump) passes t as the pair [t + c h, t + h]: the map's jump
 * from the stage's time to the step's end.
 * onStep(x, step, t), if given, is called after every step (step counts from 1). Returns {x, nfe}.
 */
export async function integrate(f, x0, steps, solver = DEFAULT_SOLVER, onStep = null, schedule = null) {
  const s = SOLVERS[solver];
  const x = Float32Array.from(x0);
  const stage = new Float32Array(x.length);
  const k = new Array(s.c.length);
  const times = timeGrid(steps, 0, 1, schedule);
  let calls = 0;
  for (let i = 0; i < steps; i++) {
    const t = times[i], h = times[i + 1] - times[i];
    for (let j = 0; j < s.c.length; j++) {
      let src = x;
      if (s.a[j].some((a) => a)) {
        stage.set(x);
        s.a[j].forEach((a, m) => { if (a) axpy(stage, k[m], h * a); });
        src = stage;
      }
      k[j] = await f(src, s.evaluates === 'map' ? [t + s.c[j] * h, t + h] : t + s.c[j] * h);
      calls++;
    }
    s.b.forEach((b, m) => { if (b) axpy(x, k[m], h * b); });
    if (onStep) onStep(x, i + 1, times[i + 1]);
  }
  return { x, nfe: calls };
}
