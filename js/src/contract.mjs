// The fm.* contract read from a model file's metadata and checked against its graph: the keys,
// schemas, names and limits come from fm_runtime/contract.json (definitions.mjs), the refusals are
// those of fm_runtime/model/contract.py and graph_io.py.

import { ModelError, printable, show } from './errors.mjs';
import { nfe } from './solvers.mjs';
import { CONTRACT, KEYS } from './definitions.mjs';
import { decode, describe, ruleProblem } from './schema.mjs';
import { loads, plain } from './pyjson.mjs';
import { parseSchedule } from './schedules.mjs';
import { conditions, refuse } from './extra-inputs.mjs';

export const FORMAT_VERSION = CONTRACT.format_version;
const PREFIX = CONTRACT.prefix;
export const NAMES = CONTRACT.graph_names;

const isInt = (v) => typeof v === 'number' && Number.isInteger(v);

// mirrors: fm_runtime/model/contract.py (_value)
/** One key's value, its size, JSON and shape checked (schema.mjs), as Python decodes it. */
function value(where, key, raw) {
  const [v, problem] = decode(key, raw);
  if (problem) throw new ModelError(`${where}: metadata ${PREFIX}${key} ${describe(problem)}`, { key: PREFIX + key, field: problem[0] });
  return v;
}


// mirrors: fm_runtime/model/contract.py (_decode)
// Each key's schema fixes its JSON type, so decoding is the whole check here; a key newer than the
// file's version must hold its default. Returns the values as plain JavaScript (for the spec) and as
// Python decoded them (for exact comparisons and messages).
function decodeAll(where, metadata, kind, version) {
  const out = {}, py = {};
  for (const [key, entry] of Object.entries(KEYS)) {
    const raw = metadata[PREFIX + key];
    if (raw === undefined) {
      if (entry.required_for.includes(kind)) throw refuse(where, key, `metadata key ${PREFIX + key} is missing`);
      continue;
    }
    py[key] = value(where, key, raw);
    out[key] = plain(py[key]);
    if (entry.since > version && !(Object.hasOwn(entry, 'default') && JSON.stringify(out[key]) === JSON.stringify(entry.default))) {
      throw refuse(where, key, `${PREFIX}${key} needs contract version ${entry.since}; the file declares ${version}`, null);
    }
  }
  return [out, py];
}

// mirrors: fm_runtime/model/contract.py (_with_defaults)
/** Both forms of the file's values with each absent key's contract.json "default" (or "default_from"). */
function withDefaults(m, py) {
  for (const [key, entry] of Object.entries(KEYS)) {
    if (Object.hasOwn(m, key) || !Object.hasOwn(entry, 'default')) continue;
    py[key] = loads(JSON.stringify(entry.default));
    m[key] = plain(py[key]);
  }
  for (const [key, entry] of Object.entries(KEYS)) {
    if (Object.hasOwn(m, key) || entry.default_from === undefined) continue;
    [m[key], py[key]] = [m[entry.default_from] ?? null, py[entry.default_from] ?? null];
  }
}

// mirrors: fm_runtime/model/contract.py (_derived)
/**
 * The rules that need code rather than contract.json's data: a baked file's solve is its default
 * solver and steps, and its NFE is what that solve costs.
 */
function derived(where, m, py, kind) {
  if (kind !== 'baked') return;
  const baked = m.baked, [solver, steps] = [baked.solver, baked.steps];
  baked.nfe ??= nfe(solver, steps);
  if (baked.nfe !== nfe(solver, steps)) {
    throw refuse(where, 'baked', `fm.baked says ${baked.nfe} NFE, but ${solver}:${steps} takes ${nfe(solver, steps)}`, 'nfe');
  }
  [m.default_solver, m.default_steps, py.default_solver, py.default_steps] = [solver, steps, py.baked.get('solver'), py.baked.get('steps')];
}

// mirrors: fm_runtime/model/contract.py (_decode_version)
function decodeVersion(where, metadata) {
  if (!(PREFIX + 'format_version' in metadata)) throw refuse(where, 'format_version', 'metadata has fm.* keys but no fm.format_version');
  const raw = metadata[PREFIX + 'format_version'];
  const [version, problem] = decode('format_version', raw);
  if (problem) throw refuse(where, 'format_version', `fm.format_version must be a positive integer, got ${show(raw)}`);
  if (version > FORMAT_VERSION) {
    throw refuse(where, 'format_version', `contract version ${version} is newer than this runtime understands (${FORMAT_VERSION}); upgrade fm-runtime`);
  }
  return Number(version);
}

// mirrors: fm_runtime/model/contract.py (_decode_kind)
function decodeKind(where, metadata) {
  const raw = metadata[PREFIX + 'kind'];
  if (raw === undefined) throw refuse(where, 'kind', `metadata key ${PREFIX}kind is missing`);
  return value(where, 'kind', raw);
}

// mirrors: fm_runtime/model/contract.py (_read_declared)
/** The spec of a file with fm.* metadata, as fm_runtime/model/contract.py _read_declared. */
function readDeclared(where, metadata, xName, tName) {
  const version = decodeVersion(where, metadata);
  const kind = decodeKind(where, metadata);
  const [m, py] = decodeAll(where, metadata, kind, version);
  withDefaults(m, py);
  derived(where, m, py, kind);
  const broken = ruleProblem(py);
  if (broken) throw refuse(where, broken[0], broken[2], broken[1]);
  const shape = m.data_shape, classes = m.num_classes;
  const taken = kind === 'baked' ? [m.input_z] : [classes ? NAMES.y : null, m.input_x, m.input_t, m.input_s];
  const [inputs, symbols, stage, nullValues] = conditions(where, m, py, shape, kind, new Set(taken));
  return baseSpec({
    dataShape: shape, xName: xName ?? m.input_x, tName: tName ?? m.input_t, vName: m.output_v, kind,
    sName: kind === 'velocity' ? m.input_s : null,
    zName: m.input_z, outName: m.output_x, baked: m.baked, selftest: m.selftest, variant: m.variant,
    prediction: m.prediction, probPath: m.path, defaultSolver: m.default_solver, defaultSteps: m.default_steps,
    defaultSchedule: String(parseSchedule(m.default_schedule)), training: m.training, architecture: m.architecture,
    producer: m.producer, formatVersion: version, numClasses: classes, nullClass: m.null_class, yName: m.input_y,
    valueRange: m.value_range, divergence: m.divergence, inputs, symbols, stage, nullValues,
  });
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

const DEFAULTS = Object.fromEntries(Object.entries(KEYS).filter(([, e]) => Object.hasOwn(e, 'default')).map(([k, e]) => [k, e.default]));

function baseSpec(fields) {
  return {
    dataShape: [], xName: NAMES.x, tName: NAMES.t, vName: NAMES.v, tRank: 1, kind: 'velocity', sName: null,
    zName: NAMES.z, outName: NAMES.samples, baked: {}, selftest: {}, variant: {}, prediction: 'velocity',
    probPath: { name: 'unknown' }, defaultSolver: DEFAULTS.default_solver, defaultSteps: DEFAULTS.default_steps,
    defaultSchedule: DEFAULTS.default_schedule, training: {},
    architecture: {}, producer: {}, formatVersion: null, numClasses: DEFAULTS.num_classes, nullClass: 0, yName: NAMES.y,
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
    spec = readDeclared(where, metadata, xName, tName);
    if (dataShape != null && !symbolic(spec) && dataShape.join(',') !== spec.dataShape.join(',')) {
      throw refuse(where, 'data_shape', `the file declares data shape ${show(spec.dataShape)}, not ${show(dataShape)}`);
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

// mirrors: fm_runtime/model/graph_io.py (_check_declared)
/** Every input fm.inputs declares (contract version 4) is a graph input [batch, *shape] of its dtype. */
function checkDeclared(where, spec, inputs) {
  for (const item of spec.inputs) {
    const g = graphIo(where, item.name, inputs, 'input');
    if (g.type !== DTYPES[item.dtype] || g.shape.length !== 1 + item.shape.length
        || g.shape.slice(1).some((d, j) => isInt(d) && isInt(item.shape[j]) && d !== item.shape[j])) {
      throw new ModelError(`${where}: input ${show(item.name)} is ${g.type} ${show(g.shape)}; fm.inputs declares ${item.dtype} [batch, ${item.shape.join(', ')}]`, { field: item.name });
    }
  }
}

// mirrors: fm_runtime/model/graph_io.py (check_graph, _check_baked_graph, _check_velocity_graph)
function checkGraph(where, spec, inputs, outputs) {
  if (spec.kind === 'baked') {
    const z = graphIo(where, spec.zName, inputs, 'input'), x = graphIo(where, spec.outName, outputs, 'output');
    checkTypes(where, 'baked sampler', [['input', spec.zName, z.type], ['output', spec.outName, x.type]]);
    const fed = new Set([spec.zName, ...spec.inputs.map((i) => i.name)]);
    const extra = Object.keys(inputs).filter((n) => !fed.has(n));
    if (extra.length) throw new ModelError(`${where}: the graph has inputs this runtime does not feed: ${extra.map(printable).join(', ')}`, { field: extra[0] });
    checkDeclared(where, spec, inputs);
    checkShape(where, 'input', spec.zName, z.shape, spec.dataShape);
    checkShape(where, 'output', spec.outName, x.shape, spec.dataShape);
    return;
  }
  const x = graphIo(where, spec.xName, inputs, 'input'), t = graphIo(where, spec.tName, inputs, 'input');
  const v = graphIo(where, spec.vName, outputs, 'output');
  checkTypes(where, 'velocity model', [['input', spec.xName, x.type], ['input', spec.tName, t.type], ['output', spec.vName, v.type]]);
  const fed = [spec.xName, spec.tName, ...(spec.sName ? [spec.sName] : []), ...spec.inputs.map((i) => i.name)];
  if (spec.sName === spec.xName || spec.sName === spec.tName) {
    throw new ModelError(`${where}: fm.input_s names ${show(spec.sName)}, the graph's x or t`, { field: spec.sName });
  }
  if (spec.sName) {     // a flow map's start time: float32 shaped like t
    const s = graphIo(where, spec.sName, inputs, 'input');
    if (s.type !== t.type || s.shape.length !== t.shape.length
        || s.shape.slice(1).some((d, j) => isInt(d) && isInt(t.shape[j + 1]) && d !== t.shape[j + 1])) {
      throw new ModelError(`${where}: the flow map's start-time input ${show(spec.sName)} is ${s.type} ${show(s.shape)}; expected it shaped like ${show(spec.tName)} (${t.type} ${show(t.shape)})`, { field: spec.sName });
    }
  }
  checkDeclared(where, spec, inputs);
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
