// A large request's rows shared between this thread and worker threads, each with its own
// onnxruntime-node session of the same file: the Node counterpart of the Python runtime's tiles
// over worker threads (fm_runtime/engine/tiler.py). onnxruntime-node runs a graph on the calling
// thread, so one thread's session can use one core per call; 2-D moons at 10 000 rows gains 1.7x
// on 2 cores this way against 1.1x from onnxruntime's own intra-op threads.
//
// Rows are split in contiguous shares, one per thread, when every share holds at least
// MIN_SPLIT_VALUES state values, as in Python; each row's solve is independent, so the samples are
// those of one thread. Requests with conditions (cond) stay on this thread. The workers start on
// the first request large enough to share, which itself runs here; later ones share once they are
// ready. Idle workers never keep the process alive (one still loading delays its exit by that
// load, a fraction of a second), and release() ends them.

import { Worker } from 'node:worker_threads';
import * as errors from './errors.mjs';
import { samplingRequest } from './request.mjs';
import { newSeed, noiseRows } from './noise.mjs';

export const MIN_SPLIT_VALUES = 256;

/** [[start, stop), ...]: n rows of `dim` values in at most `threads` contiguous shares of at least
 * MIN_SPLIT_VALUES values each. */
export function shares(n, dim, threads) {
  const parts = Math.max(1, Math.min(threads, Math.floor((n * dim) / MIN_SPLIT_VALUES), n));
  const rows = Math.ceil(n / parts), out = [];
  for (let a = 0; a < n; a += rows) out.push([a, Math.min(a + rows, n)]);
  return out;
}

/** A worker's error as the class it was thrown as. */
function revive({ name, message, key, field }) {
  const Kind = Object.hasOwn(errors, name) && errors[name].prototype instanceof errors.FmError ? errors[name] : errors.ModelError;
  return new Kind(message, { key, field });
}

export class TilePool {
  /** `workers` threads beside this one, each loading `bytes` with load() `options` (cloneable). */
  constructor(bytes, options, workers) {
    Object.assign(this, { bytes, options, size: workers, workers: [], pending: new Map(), next: 0, ready: null, broken: null });
  }

  start() {
    this.ready ??= Promise.all(Array.from({ length: this.size }, () => this.spawn())).then(
      (workers) => { this.workers = workers; },
      (e) => { this.broken = e; this.close(); });
    return this.ready;
  }

  spawn() {
    const worker = new Worker(new URL('./node-worker.mjs', import.meta.url), {
      workerData: { bytes: this.bytes, options: this.options },
      // the process's flags but those a worker refuses (node --input-type=module -e ...)
      execArgv: process.execArgv.filter((a) => !a.startsWith('--input-type')),
    });
    worker.jobs = 0;
    return new Promise((resolve, reject) => {
      worker.once('message', (m) => {
        if (m.error) return reject(revive(m.error));
        worker.unref();             // idle workers never keep the process alive
        resolve(worker);
      });
      worker.once('error', reject);
      worker.once('exit', () => reject(new errors.ModelError('a sampling worker thread ended while loading')));
      worker.on('message', (m) => this.settle(m));
      worker.on('error', (e) => this.fail(e));
      worker.on('exit', () => this.fail(new errors.ModelError('a sampling worker thread ended')));
    });
  }

  settle({ id, data, nfe, error }) {
    const job = this.pending.get(id);
    if (!job) return;
    this.pending.delete(id);
    if (--job.worker.jobs === 0) job.worker.unref();
    if (error) job.reject(revive(error));
    else job.resolve({ data, nfe });
  }

  /** A worker failed or ended: its requests fail, and later ones run on the calling thread. */
  fail(e) {
    this.broken ??= e;
    for (const job of this.pending.values()) job.reject(e);
    this.pending.clear();
  }

  run(worker, options) {
    const id = this.next++;
    if (worker.jobs++ === 0) worker.ref();       // a worker with a job keeps the process alive for it
    return { id, done: new Promise((resolve, reject) => { this.pending.set(id, { resolve, reject, worker }); worker.postMessage({ id, options }); }) };
  }

  /** The request's samples from this thread and the workers, or null where it is not shared. */
  async sample(sampler, options) {
    if (this.broken || !options || typeof options !== 'object' || options.cond != null || options.dims != null) return null;
    const { spec } = sampler;
    if (spec.inputs.length || spec.stage.outputs) return null;
    const rows = options.noise?.length != null ? options.noise.length / spec.dim : options.n;
    if (!(rows > 0) || shares(rows, spec.dim, this.size + 1).length < 2) return null;
    if (!this.workers.length) { this.start(); return null; }     // this one here; later ones shared
    const req = samplingRequest(spec, sampler.where, options);       // the errors sampleHere gives
    sampler.checkMemory(req, this.size + 1);
    const noise = req.noise ?? noiseRows(req.seed ?? newSeed(), 0, req.n, spec.dim);
    const parts = shares(req.n, spec.dim, this.size + 1);
    const rest = Object.fromEntries(Object.entries(options).filter(([k]) => !['n', 'seed', 'noise', 'labels', 'signal'].includes(k)));
    const part = ([a, b]) => ({ ...rest, noise: noise.subarray(a * spec.dim, b * spec.dim), labels: req.labels?.subarray(a, b) });
    // a worker's rows copied out: a view would send its whole buffer
    const copy = (o) => ({ ...o, noise: o.noise.slice(), labels: o.labels?.slice() });
    const jobs = parts.slice(1).map((ab, i) => this.run(this.workers[i], copy(part(ab))));
    const cancel = () => { for (const { id } of jobs) this.workers.forEach((w) => w.postMessage({ cancel: id })); };
    const signal = options.signal;
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      const done = await Promise.all([sampler.sampleHere({ ...part(parts[0]), signal }), ...jobs.map((j) => j.done)]);
      const out = new Float32Array(req.n * spec.dim);
      done.forEach((r, i) => out.set(r.data, parts[i][0] * spec.dim));
      return { data: out, dims: [req.n, ...spec.dataShape], nfe: done[0].nfe };
    } catch (e) {
      cancel();
      throw e;
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
  }

  close() {
    for (const w of this.workers) w.terminate();
    this.workers = [];
  }
}
