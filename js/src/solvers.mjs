// Fixed-step solvers as Butcher tableaus, the same methods, grid and order of operations as the
// Python runtime (fm_runtime/solvers.py). Every float32 operation is rounded like numpy's float32
// arithmetic (Math.fround after each multiply and add), so the two runtimes agree to the last
// bits the network's own kernels allow. The grid comes from a time schedule (schedules.mjs).

import { parseSchedule } from './schedules.mjs';

export const SOLVERS = {
  euler: { name: 'euler', evalsPerStep: 1, order: 1, c: [0], a: [[]], b: [1] },
  midpoint: { name: 'midpoint', evalsPerStep: 2, order: 2, c: [0, 0.5], a: [[], [0.5]], b: [0, 1] },
  heun: { name: 'heun', evalsPerStep: 2, order: 2, c: [0, 1], a: [[], [1]], b: [0.5, 0.5] },
  rk4: {
    name: 'rk4', evalsPerStep: 4, order: 4, c: [0, 0.5, 0.5, 1],
    a: [[], [0.5], [0, 0.5], [0, 0, 1]], b: [1 / 6, 1 / 3, 1 / 3, 1 / 6],
  },
};
export const DEFAULT_SOLVER = 'midpoint';
export const DEFAULT_STEPS = 8;
export const MAX_STEPS = 100000;

export function nfe(solver, steps) {
  return SOLVERS[solver].evalsPerStep * steps;
}

/** The grid t0 = t_0, ..., t_steps = t1 of a schedule (null: uniform), in float64 (exact ends). */
export function timeGrid(steps, t0 = 0, t1 = 1, schedule = null) {
  return parseSchedule(schedule).grid(steps, t0, t1);
}

const fround = Math.fround;

/** out += k * c in float32 (numpy: multiply(k, c, out=scratch); out += scratch). */
function axpy(out, k, c) {
  const cf = fround(c);
  for (let i = 0; i < out.length; i++) out[i] = fround(out[i] + fround(k[i] * cf));
}

/**
 * Solve dx/dt = f(x, t) from 0 to 1 in `steps` steps on the grid of `schedule` (schedules.mjs;
 * null: uniform), updating a copy of x0 (a
 * Float32Array) in place. f(x, t) returns a Float32Array (or a promise of one) of x's length.
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
      k[j] = await f(src, t + s.c[j] * h);
      calls++;
    }
    s.b.forEach((b, m) => { if (b) axpy(x, k[m], h * b); });
    if (onStep) onStep(x, i + 1, times[i + 1]);
  }
  return { x, nfe: calls };
}
