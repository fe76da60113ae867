// The condition stage (fm.condition_stage): the second graph of a file, run once per request, that
// makes some of the velocity's inputs (mu, mask, text embeddings) from what the request gives
// (token ids, speaker ids, observations). Mirrors through_stage in fm_runtime/engine/conditions.py.

import { ModelError, UsageError, InputError, show } from './errors.mjs';
import { readModel } from './onnx-proto.mjs';
import { checkGraphMemory } from './preflight.mjs';
import { asArray, checkSize } from './conditions.mjs';
import { loadFailure, selfTest } from './session.mjs';

// mirrors: fm_runtime/model/session.py (open_stage)
/** The stage's onnxruntime session, its own self-test passed. */
export async function openStage(ort, spec, where, sessionOptions = {}, allowLoops = false) {
  const at = `${where} (condition stage graph)`;
  let bytes, model;
  try {
    const text = spec.stage.onnx_base64;      // strict, as Python's b64decode(validate=True)
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) throw new Error('not base64');
    bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new ModelError(`${where}: fm.condition_stage does not hold base64 data`, { key: 'fm.condition_stage' });
  }
  try {
    model = readModel(bytes);
  } catch {
    throw new ModelError(`${at} does not hold a loadable graph`);
  }
  checkGraphMemory(bytes, at, undefined, { allowLoops });
  let session, probe;
  try {
    session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], logSeverityLevel: 4, ...sessionOptions });
  } catch (e) {
    throw loadFailure(at, e);
  }
  try {
    probe = model.metadata['fm.selftest'] ? JSON.parse(model.metadata['fm.selftest']) : {};
  } catch {
    throw new ModelError(`${at}: metadata fm.selftest is malformed`);
  }
  await selfTest(ort, session, model.inputs, probe, at);
  return session;
}

const usage = (message, field) => new UsageError(message, { key: 'cond', field });

// mirrors: fm_runtime/engine/conditions.py (through_stage)
/**
 * [the request's conditions with the stage's inputs replaced by its outputs, the nulls it made]:
 * `run(feed) -> {name: ort.Tensor}` runs the stage once for the whole request. Inputs without the
 * batch axis run as one row whose outputs apply to every row. A `guided` request whose file takes
 * a null from the stage runs the null request (every stage input zeros) in the same call. Without
 * the stage's inputs the request gives the stage's outputs itself, and nothing runs.
 */
export async function throughStage(ort, spec, where, cond, run, guided) {
  const stage = spec.stage, items = stage.inputs ?? [];
  const names = items.map((i) => i.name);
  const stagedNulls = spec.inputs.filter((i) => i.null === 'stage').map((i) => i.name);
  if (!cond || !names.some((k) => Object.hasOwn(cond, k))) {
    if (guided && stagedNulls.length) {
      throw usage(`${where}: the null of ${show(stagedNulls[0])} comes from the condition stage; for guidance give the stage's inputs (${names.join(', ')})`, stagedNulls[0]);
    }
    return [cond, {}];
  }
  const missing = names.filter((k) => !Object.hasOwn(cond, k));
  if (missing.length) throw usage(`${where}: the condition stage needs ${names.join(', ')}; ${show(missing[0])} is missing`, missing[0]);
  const both = stage.outputs.filter((k) => Object.hasOwn(cond, k));
  if (both.length) {
    throw usage(`${where}: ${show(both[0])} comes from the condition stage; give the stage's inputs (${names.join(', ')}) or ${show(both[0])}, not both`, both[0]);
  }
  const withNulls = guided && stagedNulls.length > 0;
  const feed = {};
  let batched = null, rows = 1;
  for (const item of items) {
    const [data, shape] = asArray(item, cond[item.name]);
    const hasRows = shape.length === item.shape.length + 1;
    if (!hasRows && shape.length !== item.shape.length) {
      throw new InputError(`condition ${show(item.name)} has shape [${shape.join(', ')}]; expected [${item.shape.join(', ')}] or [n, ${item.shape.join(', ')}]`, { key: 'cond', field: item.name });
    }
    if (batched !== null && batched !== hasRows) throw usage("the condition stage's inputs must all have the batch axis or none", item.name);
    batched = hasRows;
    const dims = hasRows ? shape : [1, ...shape];
    if (Object.keys(feed).length && dims[0] !== rows) {
      throw usage(`the condition stage's per-row inputs disagree on rows: ${[rows, dims[0]].sort((a, b) => a - b).join(', ')}`, item.name);
    }
    if (dims[0] === 0) throw usage("the condition stage's inputs have no rows (give at least one)", item.name);
    dims.slice(1).forEach((got, j) => {
      const want = item.shape[j];
      if (typeof want === 'string') checkSize(spec, where, want, got);
      else if (got !== want) {
        throw new InputError(`condition ${show(item.name)} has shape [${dims.join(', ')}], expected [${item.shape.join(', ')}]`, { key: 'cond', field: item.name });
      }
    });
    rows = dims[0];
    let values = data;
    if (withNulls) { values = new data.constructor(2 * data.length); values.set(data); }   // then rows of zeros
    feed[item.name] = new ort.Tensor(item.dtype, values, [withNulls ? 2 * rows : rows, ...dims.slice(1)]);
  }
  const outputs = await run(feed);
  const made = Object.fromEntries(Object.entries(cond).filter(([k]) => !names.includes(k)));
  const nulls = {};
  const declared = Object.fromEntries(spec.inputs.map((i) => [i.name, i]));
  for (const name of stage.outputs) {
    const out = outputs[name], item = declared[name], want = withNulls ? 2 * rows : rows;
    if (out.dims.length !== item.shape.length + 1 || out.dims[0] !== want || out.type !== item.dtype) {
      throw new ModelError(`${where}: the condition stage returned ${name} as ${out.type} [${out.dims.join(', ')}] for ${want} rows; fm.inputs declares ${item.dtype} [${want}, ${item.shape.join(', ')}]`, { key: 'fm.condition_stage' });
    }
    const size = out.data.length / out.dims[0], dims = out.dims.slice(1);
    const half = (r) => new out.data.constructor(out.data.subarray(r * size, (r + rows) * size));
    made[name] = { data: half(0), dims: batched ? [rows, ...dims] : dims };
    if (withNulls && stagedNulls.includes(name)) nulls[name] = { data: half(rows), dims };
  }
  return [made, nulls];
}
