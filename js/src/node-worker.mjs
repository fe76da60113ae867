// A sampling worker thread of node-pool.mjs: loads the file it is given on its own session and
// solves the rows it is sent, one request at a time as they come; {cancel: id} stops one (at its
// next graph call, as an AbortSignal does).

import { parentPort, workerData } from 'node:worker_threads';
import { load } from './node.mjs';

const failure = (e) => ({ name: e?.name ?? 'Error', message: String(e?.message ?? e), key: e?.key ?? null, field: e?.field ?? null });
const cancels = new Map();
let sampler;
try {
  sampler = await load(workerData.bytes, { ...workerData.options, workers: 1 });
  parentPort.postMessage({ ready: true });
} catch (e) {
  parentPort.postMessage({ error: failure(e) });
}

parentPort.on('message', async ({ id, options, cancel }) => {
  if (cancel != null) return cancels.get(cancel)?.abort();
  const controller = new AbortController();
  cancels.set(id, controller);
  try {
    const { data, nfe } = await sampler.sample({ ...options, signal: controller.signal });
    parentPort.postMessage({ id, data, nfe }, [data.buffer]);
  } catch (e) {
    parentPort.postMessage({ id, error: failure(e) });
  } finally {
    cancels.delete(id);
  }
});
