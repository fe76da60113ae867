// Node.js entry: load(bytesOrPathOrUrl, {backend}) on onnxruntime-node ('cpu', the default) or on
// onnxruntime-web's WebAssembly build ('wasm'), the one browsers use.

import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ModelError, UsageError, printable, show } from './errors.mjs';
import { loadBytes } from './sampler.mjs';
import { openDirect } from './node-session.mjs';
import { TilePool } from './node-pool.mjs';

export * from './errors.mjs';
export { Sampler, inspect, DEFAULT_TILE } from './sampler.mjs';
export { SOLVERS, DEFAULT_SOLVER, DEFAULT_STEPS } from './solvers.mjs';
export { Schedule, parseSchedule } from './schedules.mjs';

/** The moons model shipped in the Python package (fm_runtime/assets/moons.onnx), copied beside this module (scripts/shared-files.mjs). */
export const DEFAULT_MODEL = fileURLToPath(new URL('./moons.onnx', import.meta.url));

const MAX_WORKERS = 256;     // worker threads of one sampler

async function readSource(source) {
  if (source instanceof Uint8Array) return [source, 'model'];
  if (source instanceof ArrayBuffer) return [new Uint8Array(source), 'model'];
  if (source instanceof URL && source.protocol !== 'file:') source = source.href;
  if (typeof source === 'string' && /^https?:\/\//.test(source)) {
    let res;
    try { res = await fetch(source); } catch (e) { throw new ModelError(`${source}: cannot fetch the model (${e.message})`); }
    if (!res.ok) throw new ModelError(`${source}: cannot fetch the model (HTTP ${res.status})`);
    return [new Uint8Array(await res.arrayBuffer()), source];
  }
  if (!(typeof source === 'string' || source instanceof URL)) {
    throw new UsageError(`load() takes a path, a URL or the file's bytes (Uint8Array), got ${printable(typeof source)}`);
  }
  const where = source instanceof URL ? fileURLToPath(source) : source;
  try {
    return [new Uint8Array(await readFile(source)), where];
  } catch (e) {
    if (e.code === 'ENOENT') throw new ModelError(`${where}: model file not found`);
    if (e.code === 'EISDIR') throw new ModelError(`${where}: is a directory, not a model file`);
    throw new ModelError(`${where}: cannot read the file (${e.code ?? e.message})`);
  }
}

const BACKENDS = { cpu: 'onnxruntime-node', wasm: 'onnxruntime-web' };

/**
 * Load a model file and return a Sampler (see sampler.mjs). `source`: a path, a file: or http(s)
 * URL, or the file's bytes; omitted: the shipped moons model. Options: backend ('cpu':
 * onnxruntime-node, 'wasm': onnxruntime-web), workers (threads a large request's rows are shared
 * over on 'cpu', this one included, each with its own session: default every core; 1: this thread
 * only; see node-pool.mjs), threads (onnxruntime's intra-op threads per session), tile,
 * dataShape/xName/tName for files without metadata, where (the name in messages), ort (an
 * onnxruntime module to use instead; then no workers).
 */
export async function load(source = DEFAULT_MODEL, options = {}) {
  const { backend = 'cpu', ort = null, where = null, threads = 1, workers = availableParallelism(), ...rest } = options;
  if (!ort && !Object.hasOwn(BACKENDS, backend)) {
    throw new UsageError(`unknown backend ${printable(JSON.stringify(backend))}; in Node choose one of: ${Object.keys(BACKENDS).join(', ')}`);
  }
  if (!(Number.isInteger(workers) && workers >= 1 && workers <= MAX_WORKERS)) {     // each holds a session of the file
    throw new UsageError(`workers must be a whole number in 1..${MAX_WORKERS}, got ${show(workers)}`, { key: 'workers' });
  }
  const runtime = ort ?? await import(BACKENDS[backend]);
  if (backend === 'wasm' && runtime.env?.wasm) runtime.env.wasm.numThreads = threads;
  const [bytes, name] = await readSource(source);
  // onnxruntime-node's own binding, without the public API's per-call hop (node-session.mjs)
  const native = !ort && backend === 'cpu';
  const direct = native ? { open: async (b, o) => openDirect(b, o) ?? runtime.InferenceSession.create(b, o) } : {};
  const sampler = await loadBytes(runtime, bytes, { ...direct, ...rest, threads, backend, where: where ?? name });
  if (native && workers > 1) sampler.pool = new TilePool(bytes, { ...rest, threads, where: where ?? name }, workers - 1);
  return sampler;
}
