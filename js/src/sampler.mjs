// The sampler: one model file (bytes) -> its contract, an onnxruntime session and its self-test
// -> sample({n, steps, solver, schedule, noise, labels, guidance}). Platform-free: the onnxruntime module
// (onnxruntime-node or onnxruntime-web) is passed in, so the same code runs in Node and browsers.

import { InputError, Interrupted, ModelError, NumericalError, ResourceError, TimedOut, UsageError, printable, show } from './errors.mjs';
import { UTF8_ERROR, readModel } from './onnx-proto.mjs';
import { allowance, checkGraphMemory } from './preflight.mjs';
import { loadFailure, runGraph, selfTest } from './session.mjs';
import { openStage, throughStage } from './stage.mjs';
import { maskRows } from './conditions.mjs';
import { readSpec } from './contract.mjs';
import { MAX_STEPS, SOLVERS, integrate } from './solvers.mjs';
import { mapSolver, samplingRequest } from './request.mjs';
import { newSeed, noiseRows } from './noise.mjs';
import { check } from './options.mjs';

export const DEFAULT_TILE = 2048;
const MAX_ARRAY = 2 ** 31 - 1;      // values of one Float32Array this sampler allocates (8 GiB)

/** The contract of a model file's bytes, read and checked before onnxruntime sees them. */
export function inspect(bytes, where = 'model', options = {}) {
  if (!bytes.length) throw new ModelError(`${where}: file is empty`);
  let model;
  try {
    model = readModel(bytes);
  } catch (e) {
    if (e?.message === UTF8_ERROR) throw new ModelError(`${where}: the model's metadata or input/output names are not valid UTF-8`);
    const zip = bytes[0] === 0x50 && bytes[1] === 0x4b;
    throw new ModelError(`${where}: not an ONNX model, or truncated or corrupted (cannot parse it)`
      + (zip ? `; it looks like a PyTorch checkpoint (a zip): export it first with \`fm-export ${where} --out model.onnx\`` : ''));
  }
  if (model.externalData) throw loadFailure(where, new Error('external data'));
  const table = (list) => Object.fromEntries(list.map((v) => [v.name, { type: v.type, shape: v.shape }]));
  const spec = readSpec(where, model.metadata, table(model.inputs), table(model.outputs), options);
  return { spec, metadata: model.metadata, inputs: model.inputs, outputs: model.outputs };
}

export class Sampler {
  constructor(ort, session, spec, where, { tile = DEFAULT_TILE, backend = 'cpu', maxMemory = null, allowLoops = false } = {}) {
    Object.assign(this, { ort, session, spec, where, tile, backend, maxMemory, allowLoops });
  }

  get baked() { return this.spec.kind === 'baked'; }
  get dataShape() { return [...this.spec.dataShape]; }
  get numClasses() { return this.spec.numClasses; }

  /** Network evaluations per row of a solve (the model's defaults where not given; the steps
   * under the flow-map rules of mapSolver, as Python's Sampler.nfe). */
  nfe(steps, solver) {
    solver ??= this.spec.defaultSolver;
    return SOLVERS[solver].evalsPerStep * mapSolver(this.spec, this.where, solver, steps);
  }

  toString() {
    const what = this.baked ? `baked ${this.spec.baked.solver}:${this.spec.baked.steps}`
      : `${this.spec.sName ? 'flow map' : 'velocity'}, ${this.spec.defaultSolver} ${this.spec.defaultSteps} steps`;
    const classes = this.numClasses ? `, ${this.numClasses} classes` : '';
    return `Sampler(${printable(this.where)}: ${what}, data shape [${this.spec.dataShape.join(', ')}]${classes}, ${this.backend})`;
  }

  /** Rows [start, start + n) of the seeded noise stream: the same values as Python's
   * sampler.noise(n, seed, start) (the contract's stream, fm_runtime/solve/noise.py). */
  noise(n, seed = 0, start = 0) {
    check('seed', seed);
    check('n', n);
    if (!(Number.isSafeInteger(start) && start >= 0)) throw new UsageError(`start must be a whole number >= 0 (the first row of the stream), got ${show(start)}`, { key: 'start' });
    this.checkArray(n);
    return noiseRows(seed, start, start + n, this.spec.dim);
  }

  /** ResourceError where n rows of this file's data would not fit one JavaScript typed array. */
  checkArray(n, dim = this.spec.dim) {
    if (n * dim > MAX_ARRAY) {
      throw new ResourceError(`${this.where}: ${n.toLocaleString('en-US')} rows of ${dim.toLocaleString('en-US')} values are more than one JavaScript array holds (${MAX_ARRAY.toLocaleString('en-US')} values); use fewer rows`, { key: 'n' });
    }
  }

  /**
   * Draw samples: give `n` (and an optional `seed`) or `noise` (a Float32Array of n x prod(data
   * shape) values, row-major). `steps`/`solver` default to the file's, and so does `schedule`
   * (schedules.mjs: "uniform", "shift:S", "sway:S", "cosine", "times:0,...,1" or an array of
   * times, which fix the steps; dopri5 is Python-only); `labels` (one class for
   * every row, or one per row) and `guidance` w (v_u + w (v_c - v_u)) for class-conditional
   * models; `timeoutMs` ends the request with TimedOut at the first graph call past it, and an
   * AbortSignal `signal` with Interrupted. Returns {data: Float32Array, dims: [n, ...dataShape], nfe}.
   * In Node, a large request's rows are shared with worker threads (node-pool.mjs).
   */
  async sample(options = {}) {
    try {
      return await this.pool?.sample(this, options) ?? await this.sampleHere(options);
    } catch (e) {       // V8 out of memory for a typed array: the request's size, not a bug
      if (e instanceof RangeError && /allocation failed|Invalid typed array length|Array buffer/.test(e.message)) {
        throw new ResourceError(`${this.where}: out of memory for this request (${e.message}); ask for fewer rows`, { key: 'n' });
      }
      throw e;
    }
  }

  /** sample() on this thread. */
  async sampleHere(options) {
    let staged = {};
    if (this.spec.stage.outputs && options && typeof options === 'object' && options.cond && typeof options.cond === 'object') {
      const guided = (options.guidance ?? 1) !== 1 && !this.spec.inputs.some((i) => i.role === 'guidance');
      let cond;
      [cond, staged] = await throughStage(this.ort, this.spec, this.where, options.cond, (feed) => this.runStage(feed), guided);
      options = { ...options, cond };
    }
    const stageInputs = (this.spec.stage.inputs ?? []).map((i) => i.name);
    if (options?.nullCond && typeof options.nullCond === 'object' && stageInputs.some((k) => k in options.nullCond)) {
      // a negative prompt given as the stage's inputs: through the stage, its conditions kept (not its mask)
      const [made] = await throughStage(this.ort, this.spec, this.where, options.nullCond, (feed) => this.runStage(feed), false);
      const conditions = new Set(this.spec.inputs.filter((i) => i.role === 'condition').map((i) => i.name));
      options = { ...options, nullCond: Object.fromEntries(Object.entries(made).filter(([k]) => conditions.has(k))) };
    }
    const req = samplingRequest(this.spec, this.where, options, staged);
    const spec = req.spec, dim = spec.dim;
    const stop = this.stopper(req);
    this.checkMemory(req, 1);
    this.checkArray(req.n, dim);
    const x0 = req.noise ?? noiseRows(req.seed ?? newSeed(), 0, req.n, dim);
    const mask = spec.inputs.find((i) => i.role === 'mask');
    if (mask) maskRows(x0, req.inputs[mask.name].data, req.n, spec);
    const out = new Float32Array(x0.length);
    const tile = this.tile > 0 ? this.tile : req.n;
    let calls = 0;
    for (let a = 0; a < req.n; a += tile) {
      const b = Math.min(a + tile, req.n);
      const z = x0.subarray(a * dim, b * dim);
      const labels = req.labels && req.labels.subarray(a, b);
      const slice = (arrays) => Object.fromEntries(Object.entries(arrays).map(([k, v]) => {
        const size = v.data.length / req.n;
        return [k, { data: v.data.subarray(a * size, b * size), dims: v.dims }];
      }));
      const guide = { guidance: req.guidance, nulls: slice(req.nulls), interval: req.interval, calls: req.calls };
      stop();
      const v = this.baked ? null : this.velocityFn(b - a, labels, guide, slice(req.inputs), spec);
      const solved = this.baked ? await this.runBaked(z, b - a, slice(req.inputs), req.guidance, spec)
        : await integrate(async (x, t) => { stop(); return v(x, t); }, z, req.steps, req.solver, this.watch(req.steps, b - a), req.schedule);
      if (solved.x.length !== z.length) {
        throw new ModelError(`${this.where}: the graph returned ${solved.x.length} values for ${b - a} rows of shape [${spec.dataShape.join(', ')}]; refusing its output`);
      }
      out.set(solved.x, a * dim);
      calls = solved.nfe;
    }
    return { data: out, dims: [req.n, ...spec.dataShape], nfe: calls };
  }

  /** ResourceError where a request's samples, plus `tiles` tiles' state and solver stages at a
   * time, would take more than maxMemory. */
  checkMemory(req, tiles) {
    if (this.maxMemory == null) return;
    const tileRows = Math.min(this.tile > 0 ? this.tile : req.n, req.n);
    const need = 4 * req.spec.dim * (req.n + tiles * tileRows * ((SOLVERS[req.solver]?.c.length ?? 1) + 2));
    if (need > this.maxMemory) {
      throw new ResourceError(`${this.where}: ${req.n} samples need about ${need.toLocaleString('en-US')} bytes, more than maxMemory (${this.maxMemory.toLocaleString('en-US')})`, { key: 'n' });
    }
  }

  /** A check run before every graph call: the request's AbortSignal and its timeoutMs deadline
   * (a graph call already running finishes first: onnxruntime's JavaScript API cannot end one). */
  stopper(req) {
    const start = performance.now(), { timeoutMs, signal } = req;
    return () => {
      if (signal?.aborted) throw new Interrupted(`${this.where}: cancelled`, { key: 'signal' });
      if (timeoutMs != null && performance.now() - start > timeoutMs) {
        throw new TimedOut(`${this.where}: stopped after timeoutMs ${timeoutMs} ms`, { key: 'timeoutMs' });
      }
    };
  }

  // mirrors: fm_runtime/engine/backends.py (Watch.on_step)
  watch(steps, rows) {
    return (x, step, t) => {
      for (let i = 0; i < x.length; i++) {
        if (!Number.isFinite(x[i])) {       // as Python: how many rows of the tile went bad
          const dim = x.length / rows;
          let bad = 0;
          for (let r = 0; r < rows; r++) {
            for (let j = r * dim; j < (r + 1) * dim; j++) if (!Number.isFinite(x[j])) { bad++; break; }
          }
          throw new NumericalError(`${this.where}: the solve produced NaN/Inf at step ${step} of ${steps} (t = ${t.toFixed(3)}), in ${bad} of ${rows} rows of a tile`);
        }
      }
    };
  }

  // mirrors: fm_runtime/engine/backends.py (BakedGraph)
  /** A baked file's one call: the noise and, in a conditioned file, its inputs (the guidance
   * weight among them) as one evaluation of the velocity loop would feed them. */
  async runBaked(z, rows, inputs = {}, guidance = 1, spec = this.spec) {
    const { ort } = this;
    const scale = spec.inputs.find((i) => i.role === 'guidance');
    const extra = { ...inputs, ...(scale ? { [scale.name]: { data: new Float32Array(rows).fill(guidance), dims: [] } } : {}) };
    const feed = { [spec.zName]: new ort.Tensor('float32', z, [rows, ...spec.dataShape]) };
    for (const [name, v] of Object.entries(extra)) {
      feed[name] = new ort.Tensor(v.data instanceof BigInt64Array ? 'int64' : 'float32', v.data, [rows, ...v.dims]);
    }
    const res = await this.session.run(feed);
    const { data: x, dims } = res[spec.outName];
    if (dims.join(',') !== [rows, ...spec.dataShape].join(',')) {     // as Python's checked()
      throw new ModelError(`${this.where}: the graph returned samples of shape [${dims.join(', ')}] for ${rows} rows of shape [${spec.dataShape.join(', ')}]; refusing its output`);
    }
    this.watch(spec.baked.steps, rows)(x, spec.baked.steps, 1);
    return { x, nfe: spec.baked.nfe ?? this.nfe() };
  }

  /** The condition stage run once on `feed` (its session opened on first use); counts stageCalls. */
  async runStage(feed) {
    this.stageSession ??= await openStage(this.ort, this.spec, this.where, {}, this.allowLoops);
    this.stageCalls = (this.stageCalls ?? 0) + 1;
    // the stage passed its self-test at load: failing now, it failed on this request's values
    // (token ids past its vocabulary, ...), as in Python
    return runGraph(this.stageSession, feed, this.spec.stage.outputs, `${this.where} (condition stage graph)`,
      `the condition stage failed on this request's ${Object.keys(feed).join(', ')}`, InputError,
      { key: 'cond', field: Object.keys(feed)[0] });
  }

  // mirrors: fm_runtime/engine/velocity.py (velocity_fn, halves)
  /** v(x, t) for `batch` rows; labels, extra inputs, guidance and a mask as one wrapper
   * (fm_runtime/engine/velocity.py): guidance replaces the label and every condition declared with
   * a null by its null (guide.nulls) in a second half of the batch (or a second call, guide.calls
   * "two"), for t in guide.interval; or it goes to the file's guidance input. `guide` may be the
   * weight alone. */
  velocityFn(batch, labels, guide, inputs = {}, spec = this.spec) {
    const { guidance = 1, nulls = {}, interval = [0, 1], calls = 'batched' } = typeof guide === 'number' ? { guidance: guide } : guide;
    const scale = spec.inputs.find((i) => i.role === 'guidance');
    const mask = spec.inputs.find((i) => i.role === 'mask');
    const guided = guidance !== 1 && !scale && (labels != null || spec.inputs.some((i) => i.null) || Object.keys(nulls).length > 0);
    const plain = () => this.velocityFn(batch, labels, { guidance: 1 }, inputs, spec);
    if (guided && (interval[0] > 0 || interval[1] < 1)) {
      const inside = this.velocityFn(batch, labels, { guidance, nulls, calls }, inputs, spec), outside = plain();
      const start = (t) => (Array.isArray(t) ? t[0] : t);       // a flow map's jump [s, t]: guided by where it starts
      return (x, t) => (start(t) >= interval[0] && start(t) <= interval[1] ? inside(x, t) : outside(x, t));
    }
    const extra = { ...inputs };
    if (scale) extra[scale.name] = { data: new Float32Array(batch).fill(guidance), dims: [] };
    const empty = guided ? { ...extra, ...Object.fromEntries(spec.inputs.filter((i) => i.null || nulls[i.name]).map((i) => [i.name, nulls[i.name]
      ?? { data: new extra[i.name].data.constructor(extra[i.name].data.length), dims: extra[i.name].dims }])) } : null;
    const two = guided && calls === 'two';
    const halves = guided && !two ? [extra, empty] : [two ? empty : extra];
    const rows = halves.length * batch;
    const fixed = {};
    for (const name of Object.keys(extra)) {
      const parts = halves.map((h) => h[name].data);
      const values = parts.length === 1 ? parts[0] : new parts[0].constructor(2 * parts[0].length);
      if (parts.length === 2) { values.set(parts[0]); values.set(parts[1], parts[0].length); }
      fixed[name] = new this.ort.Tensor(values instanceof BigInt64Array ? 'int64' : 'float32', values, [rows, ...extra[name].dims]);
    }
    if (spec.numClasses) {
      const nullLabels = new BigInt64Array(batch).fill(BigInt(spec.nullClass));
      const parts = guided && !two ? [labels ?? nullLabels, nullLabels] : [two ? nullLabels : labels ?? nullLabels];
      const y = new BigInt64Array(rows);
      parts.forEach((p, i) => y.set(p, i * batch));
      fixed[spec.yName] = new this.ort.Tensor('int64', y, [rows]);
    }
    const w = Math.fround(guidance), n = batch * spec.dim, fr = Math.fround;
    const mix = (vc, vu) => {   // vu + w (vc - vu), each operation rounded to float32 like numpy's
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = fr(vu[i] + fr(w * fr(vc[i] - vu[i])));
      return out;
    };
    let f;
    if (two) {
      const vc = plain(), vu = this.rawVelocity(spec, batch, fixed, null);
      f = async (x, t) => mix(Float32Array.from(await vc(x, t)), await vu(x, t));
    } else {
      f = this.rawVelocity(spec, rows, fixed, guided ? (v) => mix(v, v.subarray(n)) : null);
    }
    if (!mask) return f;
    const m = extra[mask.name].data;
    return async (x, t) => {
      const v = Float32Array.from(await f(x, t));
      maskRows(v, m, batch, spec);
      return v;
    };
  }

  // mirrors: fm_runtime/engine/velocity.py (_call)
  /** The graph's v(x, t); on a flow-map file (spec.sName) t is one time, u(x, t, t), or a jump's pair [s, t]. */
  rawVelocity(spec, rows, fixed, combine) {
    const { ort, session } = this;
    const tDims = spec.tRank === 1 ? [rows] : [rows, 1];
    const tb = new Float32Array(rows), sb = new Float32Array(rows);
    const times = { [spec.tName]: new ort.Tensor('float32', tb, tDims) };
    if (spec.sName) times[spec.sName] = new ort.Tensor('float32', sb, tDims);
    const xDims = [rows, ...spec.dataShape];
    const both = combine ? new Float32Array(rows * spec.dim) : null;
    return async (x, t) => {
      const [s, end] = Array.isArray(t) ? t : [t, t];
      tb.fill(end);
      sb.fill(s);
      let xs = x;
      if (both) { both.set(x); both.set(x, x.length); xs = both; }
      const out = (await runGraph(session, { [spec.xName]: new ort.Tensor('float32', xs, xDims), ...times, ...fixed },
        [spec.vName], this.where))[spec.vName];
      if (out.dims.join(',') !== xDims.join(',')) {     // as Python's checked(): never broadcast a lying graph's output
        throw new ModelError(`${this.where}: the graph returned v of shape [${out.dims.join(', ')}] for ${rows} rows of shape [${spec.dataShape.join(', ')}]; refusing its output`);
      }
      return combine ? combine(out.data) : out.data;
    };
  }

  async release() {
    this.pool?.close();
    await this.session.release?.();
  }
}

/**
 * A Sampler for a model file's bytes, with `ort` the onnxruntime module to run it on. Options:
 * where (the name used in messages), backend (an onnxruntime execution provider name),
 * dataShape/xName/tName (for plain files without metadata), tile, threads, maxMemory (bytes: caps what
 * the graph may take at load, see preflight.mjs, and refuses requests whose samples and working
 * state would take more, with ResourceError), allowLoops (run a graph holding a Loop whose trip count
 * the file does not fix: refused by default, since such a loop may never end and no timeout can stop
 * a running onnxruntime call; only for files whose producer you trust), open (bytes, session options ->
 * a session with onnxruntime's run(feeds, fetches); default ort.InferenceSession.create).
 */
export async function loadBytes(ort, bytes, { where = 'model', backend = 'cpu', dataShape = null, xName = null,
  tName = null, tile = DEFAULT_TILE, threads = 1, sessionOptions = {}, maxMemory = null, allowLoops = false,
  open = (b, o) => ort.InferenceSession.create(b, o) } = {}) {
  if (!(Number.isInteger(tile) && tile >= 0)) throw new UsageError(`tile must be a whole number >= 0, got ${show(tile)}`);
  if (maxMemory != null && !(Number.isFinite(maxMemory) && maxMemory > 0)) {
    throw new UsageError(`maxMemory must be a number of bytes > 0, got ${show(maxMemory)}`, { key: 'maxMemory' });
  }
  const { spec, inputs } = inspect(bytes, where, { dataShape, xName, tName });
  // before onnxruntime folds a bomb's constants; maxMemory caps what the graph may take
  checkGraphMemory(bytes, where, Math.min(allowance(bytes.length), maxMemory ?? Infinity), { allowLoops });
  let session;
  try {
    session = await open(bytes, {
      executionProviders: [backend], graphOptimizationLevel: 'all', executionMode: 'sequential',
      intraOpNumThreads: threads, interOpNumThreads: 1, logSeverityLevel: 4, ...sessionOptions,
    });
  } catch (e) {
    throw loadFailure(where, e);
  }
  await selfTest(ort, session, inputs, spec.selftest, where);
  return new Sampler(ort, session, spec, where, { tile, backend, maxMemory, allowLoops });
}

export { MAX_STEPS };
