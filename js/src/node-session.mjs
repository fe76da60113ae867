// onnxruntime-node sessions run straight through its native binding.
//
// onnxruntime-node's public InferenceSession.run() runs the graph synchronously on this thread
// anyway, but only after a setImmediate hop and onnxruntime-common's checks of the feed, about
// 17 us a call: a third of what a 2-D MLP's whole call costs at batch 1, and a solve makes 16 of
// them. This session calls the binding directly (same kernels, same results, same errors) and
// gives the event loop a turn (setImmediate) whenever it has held the thread for YIELD_MS, so
// timers, I/O and AbortSignals still get through in a long solve, as they did between calls.
// Where the installed onnxruntime-node does not have the binding this reads (another version's
// layout), open() returns null and the public API is used.

import { createRequire } from 'node:module';

export const YIELD_MS = 10;

let binding;
function nativeBinding() {
  if (binding === undefined) {
    binding = null;
    try {
      const mod = createRequire(import.meta.url)('onnxruntime-node/dist/binding.js');
      const Session = mod?.binding?.InferenceSession;
      if (typeof mod.initOrt === 'function' && typeof Session?.prototype?.run === 'function'
        && typeof Session.prototype.loadModel === 'function') binding = mod;
    } catch {
      binding = null;
    }
  }
  return binding;
}

class DirectSession {
  constructor(native) {
    this.native = native;
    this.inputNames = native.inputMetadata.map((m) => m.name);
    this.outputNames = native.outputMetadata.map((m) => m.name);
    this.since = performance.now();
  }

  /** The graph's outputs for `feeds` ({name: Tensor}); `fetches` a list of output names (all when
   * omitted). A value, or a promise of one after a turn of the event loop. */
  run(feeds, fetches = this.outputNames) {
    const wanted = {};
    for (const name of fetches) wanted[name] = null;
    if (performance.now() - this.since < YIELD_MS) return this.native.run(feeds, wanted);
    return new Promise((resolve, reject) => setImmediate(() => {
      this.since = performance.now();
      try {
        resolve(this.native.run(feeds, wanted));
      } catch (e) {
        reject(e);
      }
    }));
  }

  async release() {
    this.native.dispose();
  }
}

/** A DirectSession for `bytes` with onnxruntime-node's session `options`, or null where this
 * onnxruntime-node's binding is not the one this reads. Load errors are thrown as the public API's. */
export function openDirect(bytes, options) {
  const mod = nativeBinding();
  if (!mod) return null;
  mod.initOrt();
  const native = new mod.binding.InferenceSession();
  native.loadModel(bytes.buffer, bytes.byteOffset, bytes.byteLength, options);
  return new DirectSession(native);
}

export const hasDirect = () => nativeBinding() !== null;
