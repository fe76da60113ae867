// Browser entry: load(bytesOrUrl, {backend}) on onnxruntime-web, 'wasm' (default) or 'webgpu'.
// The page maps the bare names 'onnxruntime-web' (and 'onnxruntime-web/webgpu') to the files of the
// npm package with an import map (see demo/index.html), or passes the module itself as `ort`.

import { ModelError, UsageError, printable } from './errors.mjs';
import { loadBytes } from './sampler.mjs';

export * from './errors.mjs';
export { Sampler, inspect, DEFAULT_TILE } from './sampler.mjs';
export { SOLVERS, DEFAULT_SOLVER, DEFAULT_STEPS } from './solvers.mjs';
export { Schedule, parseSchedule } from './schedules.mjs';

/** The moons model shipped in the Python package, copied beside this module (scripts/shared-files.mjs). */
export const DEFAULT_MODEL = new URL('./moons.onnx', import.meta.url).href;

async function readSource(source) {
  if (source instanceof Uint8Array) return [source, 'model'];
  if (source instanceof ArrayBuffer) return [new Uint8Array(source), 'model'];
  if (typeof Blob !== 'undefined' && source instanceof Blob) {
    return [new Uint8Array(await source.arrayBuffer()), source.name ?? 'model'];
  }
  if (!(typeof source === 'string' || source instanceof URL)) {
    throw new UsageError(`load() takes a URL, a File/Blob or the file's bytes (Uint8Array), got ${printable(typeof source)}`);
  }
  const url = String(source);
  let res;
  try { res = await fetch(url); } catch (e) { throw new ModelError(`${url}: cannot fetch the model (${e.message})`); }
  if (res.status === 404) throw new ModelError(`${url}: model file not found`);
  if (!res.ok) throw new ModelError(`${url}: cannot fetch the model (HTTP ${res.status})`);
  return [new Uint8Array(await res.arrayBuffer()), url];
}

const BACKENDS = { wasm: 'onnxruntime-web', webgpu: 'onnxruntime-web/webgpu' };

/**
 * Load a model file and return a Sampler. `source`: a URL, a File/Blob or the file's bytes;
 * omitted: the shipped moons model. Options: backend ('wasm' or 'webgpu'), threads (wasm threads;
 * more than 1 needs a cross-origin isolated page), tile, dataShape/xName/tName, where, ort.
 */
export async function load(source = DEFAULT_MODEL, options = {}) {
  const { backend = 'wasm', ort = null, where = null, threads = 1, ...rest } = options;
  if (!Object.hasOwn(BACKENDS, backend)) {
    throw new UsageError(`unknown backend ${printable(JSON.stringify(backend))}; in a browser choose one of: ${Object.keys(BACKENDS).join(', ')}`);
  }
  if (backend === 'webgpu' && !globalThis.navigator?.gpu) throw new UsageError('backend webgpu: this browser has no WebGPU (use wasm)');
  const runtime = ort ?? await import(BACKENDS[backend]);
  if (runtime.env?.wasm) runtime.env.wasm.numThreads = threads;
  const [bytes, name] = await readSource(source);
  return loadBytes(runtime, bytes, { ...rest, threads, backend, where: where ?? name });
}
