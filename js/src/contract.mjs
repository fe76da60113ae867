// The fm.* contract (docs/contract.md) read from a model file's metadata and checked against its
// graph: the same keys, types, defaults and refusals as fm_runtime/contract.py and graph_io.py.

import { ModelError, printable, show } from './errors.mjs';
import { DEFAULT_SOLVER, DEFAULT_STEPS, MAX_STEPS, SOLVERS } from './solvers.mjs';

export const FORMAT_VERSION = 2;
const PREFIX = 'fm.';
const KINDS = ['velocity', 'baked'];
const PREDICTIONS = ['velocity'];
export const NAMES = { x: 'x', t: 't', v: 'v', y: 'y', z: 'z', samples: 'x' };

const ALL = KINDS, VELOCITY = ['velocity'], BAKED = ['baked'];
// key -> [JSON type, required for which kinds]
const KEYS = {
  format_version: ['int', ALL], kind: ['str', ALL], data_shape: ['list', ALL],
  input_x: ['str', VELOCITY], input_t: ['str', VELOCITY], output_v: ['str', VELOCITY],
  input_z: ['str', BAKED], output_x: ['str', BAKED], baked: ['dict', BAKED],
  prediction: ['str', ALL], path: ['dict', ALL],
  default_solver: ['str', []], default_steps: ['int', []], training: ['dict', []],
  architecture: ['dict', []], producer: ['dict', []], selftest: ['dict', []], variant: ['dict', []],
  num_classes: ['int', []], null_class: ['int', []], input_y: ['str', []], value_range: ['list', []],
  divergence: ['dict', []],
};

const INT_TEXT = /^\s*-?\d+\s*$/;
const isInt = (v) => typeof v === 'number' && Number.isInteger(v);
const isDict = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const TYPE_OK = { int: isInt, str: (v) => typeof v === 'string', list: Array.isArray, dict: isDict };
const PY_TYPE = (v) => (v === null ? 'NoneType' : Array.isArray(v) ? 'list' : typeof v === 'string' ? 'str'
  : typeof v === 'boolean' ? 'bool' : isInt(v) ? 'int' : typeof v === 'number' ? 'float' : 'dict');

function parseJson(raw) {
  try { return { ok: true, value: JSON.parse(raw) }; } catch { return { ok: false }; }
}

function decode(where, metadata, kind) {
  const out = {};
  for (const [key, [typ, requiredFor]] of Object.entries(KEYS)) {
    const raw = metadata[PREFIX + key];
    if (raw === undefined) {
      if (requiredFor.includes(kind)) throw new ModelError(`${where}: metadata key ${PREFIX + key} is missing`);
      continue;
    }
    const parsed = parseJson(raw);
    if (!parsed.ok) throw new ModelError(`${where}: metadata ${PREFIX + key} is not valid JSON: ${show(raw)}`);
    // JSON's 2.0 is a float to Python's reader, so an int must be written as one
    const asFloat = typeof parsed.value === 'number' && !INT_TEXT.test(raw);
    if (!TYPE_OK[typ](parsed.value) || (typ === 'int' && asFloat)) {
      throw new ModelError(`${where}: metadata ${PREFIX + key} should be ${typ}, got ${asFloat ? 'float' : PY_TYPE(parsed.value)} ${show(raw)}`);
    }
    out[key] = parsed.value;
  }
  return out;
}

function graphIo(where, name, ios, role) {
  if (!(name in ios)) {
    throw new ModelError(`${where}: the graph has no ${role} named ${show(name)} (it has: ${Object.keys(ios).map(printable).join(', ') || 'none'})`);
  }
  return ios[name];
}

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
    path: { name: 'unknown' }, defaultSolver: DEFAULT_SOLVER, defaultSteps: DEFAULT_STEPS, training: {},
    architecture: {}, producer: {}, formatVersion: null, numClasses: 0, nullClass: 0, yName: NAMES.y,
    valueRange: null, divergence: {}, ...fields,
  };
}

/**
 * The model's spec from its metadata (string -> string) and its graph's inputs/outputs
 * ({name: {type, shape}}), with options {dataShape, xName, tName} standing in for missing metadata.
 */
export function readSpec(where, metadata, inputs, outputs, { dataShape = null, xName = null, tName = null } = {}) {
  if (typeof dataShape === 'number') dataShape = [dataShape];
  let spec;
  if (Object.keys(metadata).some((k) => k.startsWith(PREFIX))) {
    if (!(PREFIX + 'format_version' in metadata)) throw new ModelError(`${where}: metadata has fm.* keys but no fm.format_version`);
    const rawVersion = metadata[PREFIX + 'format_version'];
    const pv = parseJson(rawVersion);
    const version = pv.ok && INT_TEXT.test(rawVersion) ? pv.value : null;
    if (!isInt(version) || version < 1) {
      throw new ModelError(`${where}: fm.format_version must be a positive integer, got ${show(rawVersion)}`);
    }
    if (version > FORMAT_VERSION) {
      throw new ModelError(`${where}: contract version ${version} is newer than this runtime understands (${FORMAT_VERSION}); upgrade fm-runtime`);
    }
    const rawKind = metadata[PREFIX + 'kind'];
    if (rawKind === undefined) throw new ModelError(`${where}: metadata key ${PREFIX}kind is missing`);
    const pk = parseJson(rawKind);
    const kind = pk.ok ? pk.value : rawKind;
    if (!KINDS.includes(kind)) throw new ModelError(`${where}: fm.kind ${show(kind)} is not one of ${KINDS.join(', ')}`);
    const m = decode(where, metadata, kind);
    if (!PREDICTIONS.includes(m.prediction)) {
      throw new ModelError(`${where}: fm.prediction ${show(m.prediction)} is not supported (supported: ${PREDICTIONS.join(', ')})`);
    }
    const shape = m.data_shape;
    if (!shape.length || !shape.every((s) => isInt(s) && s > 0)) {
      throw new ModelError(`${where}: fm.data_shape must be a list of positive integers, got ${show(shape)}`);
    }
    let solver = m.default_solver ?? DEFAULT_SOLVER;
    if (!(solver in SOLVERS)) throw new ModelError(`${where}: fm.default_solver ${show(solver)} is not a known solver`);
    let steps = m.default_steps ?? DEFAULT_STEPS;
    if (!(steps >= 1 && steps <= MAX_STEPS)) throw new ModelError(`${where}: fm.default_steps must be between 1 and ${MAX_STEPS}, got ${steps}`);
    const baked = m.baked ?? {};
    if (kind === 'baked') {
      if (!(baked.solver in SOLVERS) || !isInt(baked.steps) || !(baked.steps >= 1 && baked.steps <= MAX_STEPS)) {
        throw new ModelError(`${where}: fm.baked must name a known solver and steps >= 1, got ${show(baked)}`);
      }
      [solver, steps] = [baked.solver, baked.steps];
    }
    const classes = m.num_classes ?? 0;
    const nullClass = m.null_class ?? classes;
    if (classes < 0 || (classes && !(isInt(nullClass) && nullClass >= 0 && nullClass <= classes))) {
      throw new ModelError(`${where}: fm.num_classes must be >= 0 and fm.null_class one of 0..num_classes, got ${classes} and ${show(m.null_class ?? null)}`);
    }
    const div = m.divergence ?? {};
    if (Object.keys(div).length && !(typeof div.onnx_base64 === 'string'
        || (Array.isArray(div.unsupported_ops) && div.unsupported_ops.every((o) => typeof o === 'string')))) {
      throw new ModelError(`${where}: fm.divergence must hold onnx_base64 (a string) or unsupported_ops (a list of operator names)`);
    }
    const vr = m.value_range ?? null;
    if (vr !== null && !(vr.length === 2 && vr.every((v) => typeof v === 'number') && vr[0] < vr[1])) {
      throw new ModelError(`${where}: fm.value_range must be [low, high] with low < high, got ${show(vr)}`);
    }
    spec = baseSpec({
      dataShape: shape, xName: xName ?? m.input_x ?? NAMES.x, tName: tName ?? m.input_t ?? NAMES.t,
      vName: m.output_v ?? NAMES.v, kind, zName: m.input_z ?? NAMES.z, outName: m.output_x ?? NAMES.samples,
      baked, selftest: m.selftest ?? {}, variant: m.variant ?? {}, prediction: m.prediction, path: m.path,
      defaultSolver: solver, defaultSteps: steps, training: m.training ?? {}, architecture: m.architecture ?? {},
      producer: m.producer ?? {}, formatVersion: version, numClasses: classes, nullClass,
      yName: m.input_y ?? NAMES.y, valueRange: vr, divergence: div,
    });
    if (dataShape != null && dataShape.join(',') !== shape.join(',')) {
      throw new ModelError(`${where}: the file declares data shape ${show(shape)}, not ${show(dataShape)}`);
    }
  } else {
    spec = plainSpec(where, inputs, outputs, dataShape, xName, tName);
  }
  checkGraph(where, spec, inputs, outputs);
  spec.dim = spec.dataShape.reduce((a, b) => a * b, 1);
  return spec;
}

function checkShape(where, role, name, shape, dataShape) {
  const want = dataShape.length + 1;
  if (shape.length !== want) {
    throw new ModelError(`${where}: ${role} ${show(name)} has rank ${shape.length}, expected ${want} ([batch, ${dataShape.join(', ')}])`);
  }
  shape.slice(1).forEach((got, i) => {
    if (isInt(got) && got !== dataShape[i]) {
      throw new ModelError(`${where}: ${role} ${show(name)} has shape ${show(shape)}, but the data shape is ${show(dataShape)}`);
    }
  });
}

function checkTypes(where, what, pairs) {
  for (const [role, name, type] of pairs) {
    if (type !== 'tensor(float)') throw new ModelError(`${where}: ${role} ${show(name)} is ${type}; a ${what} uses float32 (tensor(float))`);
  }
}

function checkGraph(where, spec, inputs, outputs) {
  if (spec.kind === 'baked') {
    const z = graphIo(where, spec.zName, inputs, 'input'), x = graphIo(where, spec.outName, outputs, 'output');
    checkTypes(where, 'baked sampler', [['input', spec.zName, z.type], ['output', spec.outName, x.type]]);
    const extra = Object.keys(inputs).filter((n) => n !== spec.zName);
    if (extra.length) throw new ModelError(`${where}: the graph has inputs this runtime does not feed: ${extra.map(printable).join(', ')}`);
    checkShape(where, 'input', spec.zName, z.shape, spec.dataShape);
    checkShape(where, 'output', spec.outName, x.shape, spec.dataShape);
    return;
  }
  const x = graphIo(where, spec.xName, inputs, 'input'), t = graphIo(where, spec.tName, inputs, 'input');
  const v = graphIo(where, spec.vName, outputs, 'output');
  checkTypes(where, 'velocity model', [['input', spec.xName, x.type], ['input', spec.tName, t.type], ['output', spec.vName, v.type]]);
  const fed = [spec.xName, spec.tName];
  if (spec.numClasses) {
    const y = graphIo(where, spec.yName, inputs, 'input');
    if (y.type !== 'tensor(int64)' || y.shape.length !== 1) {
      throw new ModelError(`${where}: label input ${show(spec.yName)} is ${y.type} ${show(y.shape)}; expected int64 [batch]`);
    }
    fed.push(spec.yName);
  }
  const extra = Object.keys(inputs).filter((n) => !fed.includes(n));
  if (extra.length) throw new ModelError(`${where}: the graph has inputs this runtime does not feed: ${extra.map(printable).join(', ')}`);
  checkShape(where, 'input', spec.xName, x.shape, spec.dataShape);
  checkShape(where, 'output', spec.vName, v.shape, spec.dataShape);
  if (t.shape.length === 1) spec.tRank = 1;
  else if (t.shape.length === 2 && (t.shape[1] === 1 || !isInt(t.shape[1]))) spec.tRank = 2;
  else throw new ModelError(`${where}: input ${show(spec.tName)} has shape ${show(t.shape)}; expected [batch] or [batch, 1]`);
}
