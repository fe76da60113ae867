// The fm.* contract read from a model file's metadata and checked against its graph: the keys,
// schemas, names and limits come from fm_runtime/contract.json (definitions.mjs), the refusals are
// those of fm_runtime/model/contract.py and graph_io.py.

import { ModelError, printable, show } from './errors.mjs';
import { DEFAULT_SOLVER, DEFAULT_STEPS, MAX_STEPS, SOLVERS, nfe } from './solvers.mjs';
import { CONTRACT, KEYS } from './definitions.mjs';
import { decode, describe } from './schema.mjs';
import { dumps, plain } from './pyjson.mjs';
import { parseSchedule } from './schedules.mjs';
import { conditions, refuse } from './extra-inputs.mjs';

export const FORMAT_VERSION = CONTRACT.format_version;
const PREFIX = CONTRACT.prefix;
const KINDS = CONTRACT.kinds;
const PREDICTIONS = CONTRACT.predictions;
export const NAMES = CONTRACT.graph_names;

const isInt = (v) => typeof v === 'number' && Number.isInteger(v);
const known = (solver) => typeof solver === 'string' && Object.hasOwn(SOLVERS, solver);

// mirrors: fm_runtime/model/contract.py (_value)
/** One key's value, its size, JSON and shape checked (schema.mjs), as Python decodes it. */
function value(where, key, raw) {
  const [v, problem] = decode(key, raw);
  if (problem) throw new ModelError(`${where}: metadata ${PREFIX}${key} ${describe(problem)}`, { key: PREFIX + key, field: problem[0] });
  return v;
}


// mirrors: fm_runtime/model/contract.py (_decode)
// Each key's schema fixes its JSON type, so decoding is the whole check here. Returns the values as
// plain JavaScript (for the spec) and as Python decoded them (for exact comparisons and messages).
function decodeAll(where, metadata, kind) {
  const out = {}, py = {};
  for (const [key, entry] of Object.entries(KEYS)) {
    const raw = metadata[PREFIX + key];
    if (raw === undefined) {
      if (entry.required_for.includes(kind)) throw refuse(where, key, `metadata key ${PREFIX + key} is missing`);
      continue;
    }
    py[key] = value(where, key, raw);
    out[key] = plain(py[key]);
  }
  return [out, py];
}

// mirrors: fm_runtime/model/graph_io.py (_graph_io)
function graphIo(where, name, ios, role) {
  if (!(name in ios)) {
    throw new ModelError(`${where}: the graph has no ${role} named ${show(name)} (it has: ${Object.keys(ios).map(printable).join(', ') || 'none'})`, { field: name });
  }
  return ios[name];
}

// mirrors: fm_runtime/model/graph_io.py (plain_spec)
/** A velocity ONNX with no fm.* metadata: what the graph shows, the rest from the options. */
function plainSpec(where, inputs, outputs, dataShape, xName, tName) {
  const names = Object.keys(inputs);
  if (xName == null || tName == null) {
    if (names.length !== 2) {
      throw new ModelError(`${where}: no fm.* metadata and the graph has ${names.length} inputs (${names.join(', ')}); pass xName and tName`);
    }
    if (xName == null && tName == null) {
      const tLike = names.filter((n) => inputs[n].shape.length === 1 || (inputs[n].shape.length === 2 && inputs[n].shape[1] === 1));
      if (names.includes(NAMES.x) && names.includes(NAMES.t)) [xName, tName] = [NAMES.x, NAMES.t];
      else if (tLike.length === 1) { tName = tLike[0]; xName = names.find((n) => n !== tName); }
      else throw new ModelError(`${where}: no fm.* metadata and cannot tell which of the inputs ${names.join(', ')} is x and which is t; pass xName and tName`);
    } else if (xName == null) xName = names.find((n) => n !== tName);
    else tName = names.find((n) => n !== xName);
  }
  const xShape = graphIo(where, xName, inputs, 'input').shape;
  if (dataShape == null) {
    const rest = xShape.slice(1);
    if (!rest.length || !rest.every(isInt)) {
      throw new ModelError(`${where}: no fm.* metadata and the graph does not fix the data shape (input ${show(xName)} has shape ${show(xShape)}); pass dataShape`);
    }
    dataShape = rest;
  }
  const outNames = Object.keys(outputs);
  if (outNames.length !== 1) {
    throw new ModelError(`${where}: no fm.* metadata and the graph has ${outNames.length} outputs; a velocity model has exactly one`);
  }
  return baseSpec({ dataShape: [...dataShape], xName, tName, vName: outNames[0] });
}

function baseSpec(fields) {
  return {
    dataShape: [], xName: NAMES.x, tName: NAMES.t, vName: NAMES.v, tRank: 1, kind: 'velocity',
    zName: NAMES.z, outName: NAMES.samples, baked: {}, selftest: {}, variant: {}, prediction: 'velocity',
    probPath: { name: 'unknown' }, defaultSolver: DEFAULT_SOLVER, defaultSteps: DEFAULT_STEPS,
    defaultSchedule: 'uniform', training: {},
    architecture: {}, producer: {}, formatVersion: null, numClasses: 0, nullClass: 0, yName: NAMES.y,
    valueRange: null, divergence: {}, inputs: [], symbols: {}, stage: {}, nullValues: {}, ...fields,
  };
}

// mirrors: fm_runtime/model/contract.py (read_spec)
/**
 * The model's spec from its metadata (string -> string) and its graph's inputs/outputs
 * ({name: {type, shape}}), with options {dataShape, xName, tName} standing in for missing metadata.
 */
export function readSpec(where, metadata, inputs, outputs, { dataShape = null, xName = null, tName = null } = {}) {
  if (typeof dataShape === 'number') dataShape = [dataShape];
  let spec;
  if (Object.keys(metadata).some((k) => k.startsWith(PREFIX))) {
    if (!(PREFIX + 'format_version' in metadata)) throw refuse(where, 'format_version', 'metadata has fm.* keys but no fm.format_version');
    const rawVersion = metadata[PREFIX + 'format_version'];
    const [pyVersion, versionProblem] = decode('format_version', rawVersion);
    if (versionProblem) throw refuse(where, 'format_version', `fm.format_version must be a positive integer, got ${show(rawVersion)}`);
    const version = Number(pyVersion);
    if (version > FORMAT_VERSION) {
      throw refuse(where, 'format_version', `contract version ${pyVersion} is newer than this runtime understands (${FORMAT_VERSION}); upgrade fm-runtime`);
    }
    const rawKind = metadata[PREFIX + 'kind'];
    if (rawKind === undefined) throw refuse(where, 'kind', `metadata key ${PREFIX}kind is missing`);
    const [decodedKind, kindProblem] = decode('kind', rawKind);
    const kind = kindProblem ? rawKind : decodedKind;
    if (!KINDS.includes(kind)) throw refuse(where, 'kind', `fm.kind ${show(kind)} is not one of ${KINDS.join(', ')}`);
    const [m, py] = decodeAll(where, metadata, kind);
    if (!PREDICTIONS.includes(m.prediction)) {
      throw refuse(where, 'prediction', `fm.prediction ${show(m.prediction)} is not supported (supported: ${PREDICTIONS.join(', ')})`);
    }
    const shape = m.data_shape;
    let solver = m.default_solver ?? DEFAULT_SOLVER;
    if (!known(solver)) throw refuse(where, 'default_solver', `fm.default_solver ${show(solver)} is not a known solver`);
    let steps = m.default_steps ?? DEFAULT_STEPS;
    if (!(steps >= 1 && steps <= MAX_STEPS)) throw refuse(where, 'default_steps', `fm.default_steps must be between 1 and ${MAX_STEPS}, got ${steps}`);
    const baked = m.baked ?? {};
    if (kind === 'baked') {
      if (!known(baked.solver) || !(baked.steps >= 1 && baked.steps <= MAX_STEPS)) {
        throw refuse(where, 'baked', `fm.baked must name a known solver and 1 to ${MAX_STEPS} steps`, known(baked.solver) ? 'steps' : 'solver');
      }
      [solver, steps] = [baked.solver, baked.steps];
      baked.nfe ??= nfe(solver, steps);
      if (baked.nfe !== nfe(solver, steps)) {
        throw refuse(where, 'baked', `fm.baked says ${baked.nfe} NFE, but ${solver}:${steps} takes ${nfe(solver, steps)}`, 'nfe');
      }
    }
    let schedule;
    try {
      schedule = parseSchedule(m.default_schedule ?? 'uniform');
    } catch (e) {
      throw refuse(where, 'default_schedule', `fm.default_schedule: ${e.message}`);
    }
    if (schedule.steps !== null && schedule.steps !== steps) {
      throw refuse(where, 'default_schedule', `fm.default_schedule has ${schedule.steps} steps but the file's steps are ${steps}`);
    }
    const classes = m.num_classes ?? 0;
    const nullClass = m.null_class ?? classes;
    if (classes && !(nullClass >= 0 && nullClass <= classes)) {
      throw refuse(where, 'null_class', `fm.num_classes must be >= 0 and fm.null_class one of 0..num_classes, got ${classes} and ${nullClass}`);
    }
    const [inputs, symbols, stage, nullValues] = conditions(where, m, py, shape, kind,
      new Set([classes ? NAMES.y : null, m.input_x ?? NAMES.x, m.input_t ?? NAMES.t]));
    const div = m.divergence ?? {};
    if (Object.keys(div).length && !(typeof div.onnx_base64 === 'string' || Array.isArray(div.unsupported_ops))) {
      throw refuse(where, 'divergence', `fm.divergence must hold onnx_base64 (a string) or unsupported_ops (a list of operator names)`);
    }
    const vr = m.value_range ?? null;     // its items are finite numbers (the schema); compared exactly
    if (vr !== null && !(vr.length === 2 && py.value_range[0] < py.value_range[1])) {
      throw refuse(where, 'value_range', `fm.value_range must be [low, high] with low < high, got ${dumps(py.value_range)}`);
    }
    spec = baseSpec({
      dataShape: shape, xName: xName ?? m.input_x ?? NAMES.x, tName: tName ?? m.input_t ?? NAMES.t,
      vName: m.output_v ?? NAMES.v, kind, zName: m.input_z ?? NAMES.z, outName: m.output_x ?? NAMES.samples,
      baked, selftest: m.selftest ?? {}, variant: m.variant ?? {}, prediction: m.prediction, probPath: m.path,
      defaultSolver: solver, defaultSteps: steps, defaultSchedule: String(schedule), training: m.training ?? {}, architecture: m.architecture ?? {},
      producer: m.producer ?? {}, formatVersion: version, numClasses: classes, nullClass,
      yName: m.input_y ?? NAMES.y, valueRange: vr, divergence: div, inputs, symbols, stage, nullValues,
    });
    if (dataShape != null && !symbolic(spec) && dataShape.join(',') !== shape.join(',')) {
      throw refuse(where, 'data_shape', `the file declares data shape ${show(shape)}, not ${show(dataShape)}`);
    }
  } else {
    spec = plainSpec(where, inputs, outputs, dataShape, xName, tName);
  }
  checkGraph(where, spec, inputs, outputs);
  spec.dim = symbolic(spec) ? null : spec.dataShape.reduce((a, b) => a * b, 1);
  return spec;
}

// mirrors: fm_runtime/model/spec.py (ModelSpec.symbolic)
/** Whether shapes name symbols that each request binds (bindSpec gives the concrete spec). */
export const symbolic = (spec) => [...spec.dataShape, ...spec.inputs.flatMap((i) => i.shape)].some((d) => typeof d === 'string');

// mirrors: fm_runtime/model/spec.py (ModelSpec.bind)
/** The spec with every symbol replaced by its size in `dims`. */
export function bindSpec(spec, dims) {
  if (!symbolic(spec)) return spec;
  const sized = (shape) => shape.map((d) => (typeof d === 'string' ? dims[d] : d));
  const dataShape = sized(spec.dataShape);
  return { ...spec, dataShape, inputs: spec.inputs.map((i) => ({ ...i, shape: sized(i.shape) })),
    dim: dataShape.reduce((a, b) => a * b, 1) };
}

const DTYPES = CONTRACT.input_dtypes;

// mirrors: fm_runtime/model/graph_io.py (_check_shape)
function checkShape(where, role, name, shape, dataShape) {
  const want = dataShape.length + 1;
  if (shape.length !== want) {
    throw new ModelError(`${where}: ${role} ${show(name)} has rank ${shape.length}, expected ${want} ([batch, ${dataShape.join(', ')}])`, { field: name });
  }
  shape.slice(1).forEach((got, i) => {
    if (isInt(got) && isInt(dataShape[i]) && got !== dataShape[i]) {
      throw new ModelError(`${where}: ${role} ${show(name)} has shape ${show(shape)}, but the data shape is ${show(dataShape)}`, { field: name });
    }
  });
}

function checkTypes(where, what, pairs) {
  for (const [role, name, type] of pairs) {
    if (type !== 'tensor(float)') throw new ModelError(`${where}: ${role} ${show(name)} is ${type}; a ${what} uses float32 (tensor(float))`, { field: name });
  }
}

// mirrors: fm_runtime/model/graph_io.py (check_graph, _check_baked_graph, _check_velocity_graph)
function checkGraph(where, spec, inputs, outputs) {
  if (spec.kind === 'baked') {
    const z = graphIo(where, spec.zName, inputs, 'input'), x = graphIo(where, spec.outName, outputs, 'output');
    checkTypes(where, 'baked sampler', [['input', spec.zName, z.type], ['output', spec.outName, x.type]]);
    const extra = Object.keys(inputs).filter((n) => n !== spec.zName);
    if (extra.length) throw new ModelError(`${where}: the graph has inputs this runtime does not feed: ${extra.map(printable).join(', ')}`, { field: extra[0] });
    checkShape(where, 'input', spec.zName, z.shape, spec.dataShape);
    checkShape(where, 'output', spec.outName, x.shape, spec.dataShape);
    return;
  }
  const x = graphIo(where, spec.xName, inputs, 'input'), t = graphIo(where, spec.tName, inputs, 'input');
  const v = graphIo(where, spec.vName, outputs, 'output');
  checkTypes(where, 'velocity model', [['input', spec.xName, x.type], ['input', spec.tName, t.type], ['output', spec.vName, v.type]]);
  const fed = [spec.xName, spec.tName, ...spec.inputs.map((i) => i.name)];
  for (const item of spec.inputs) {     // contract version 4: [batch, *shape] of the declared dtype
    const g = graphIo(where, item.name, inputs, 'input');
    if (g.type !== DTYPES[item.dtype] || g.shape.length !== 1 + item.shape.length
        || g.shape.slice(1).some((d, j) => isInt(d) && isInt(item.shape[j]) && d !== item.shape[j])) {
      throw new ModelError(`${where}: input ${show(item.name)} is ${g.type} ${show(g.shape)}; fm.inputs declares ${item.dtype} [batch, ${item.shape.join(', ')}]`, { field: item.name });
    }
  }
  if (spec.numClasses) {
    const y = graphIo(where, spec.yName, inputs, 'input');
    if (y.type !== 'tensor(int64)' || y.shape.length !== 1) {
      throw new ModelError(`${where}: label input ${show(spec.yName)} is ${y.type} ${show(y.shape)}; expected int64 [batch]`, { field: spec.yName });
    }
    fed.push(spec.yName);
  }
  const extra = Object.keys(inputs).filter((n) => !fed.includes(n));
  if (extra.length) throw new ModelError(`${where}: the graph has inputs this runtime does not feed: ${extra.map(printable).join(', ')}`, { field: extra[0] });
  checkShape(where, 'input', spec.xName, x.shape, spec.dataShape);
  checkShape(where, 'output', spec.vName, v.shape, spec.dataShape);
  if (t.shape.length === 1) spec.tRank = 1;
  else if (t.shape.length === 2 && (t.shape[1] === 1 || !isInt(t.shape[1]))) spec.tRank = 2;
  else throw new ModelError(`${where}: input ${show(spec.tName)} has shape ${show(t.shape)}; expected [batch] or [batch, 1]`, { field: spec.tName });
}
