// Pre-flight, as fm_runtime/model/preflight.py: the memory a graph is bound to take, read from the
// file alone before onnxruntime folds its constants. Every tensor gets a lower bound on its shape
// (a symbolic dimension counts as 1; an op not modelled here bounds nothing), and small values are
// followed, exact from constants or lower bounds from the inputs' shapes (as preflight.py); one over the
// allowance (an eighth of it, for one row, when made from the inputs), or constants folding past
// it, is a ResourceError naming the node. The allowance: contract.json's static_bytes_floor or
// static_bytes_per_file_byte times the file's size, whichever is larger.

import { LIMITS } from './definitions.mjs';
import { ModelError, ResourceError } from './errors.mjs';
import { ProtoError, Reader, readValueInfo, text } from './onnx-proto.mjs';

const ITEM = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 8: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2 };
const SMALL = 4096;
const PER_ROW_SHARE = 8;
const UNARY = new Set(['Identity', 'Neg', 'Abs', 'Relu', 'Sigmoid', 'Tanh', 'Exp', 'Log', 'Sqrt', 'Sin', 'Cos', 'Erf',
  'Not', 'Softmax', 'LogSoftmax', 'Elu', 'LeakyRelu', 'Floor', 'Ceil', 'Round', 'Reciprocal', 'Sign', 'Dropout',
  'Softplus', 'HardSigmoid', 'Gelu', 'IsNaN', 'IsInf', 'CastLike', 'Clip']);
const BINARY = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Equal', 'Less', 'Greater', 'LessOrEqual',
  'GreaterOrEqual', 'And', 'Or', 'Xor', 'Mod', 'Where', 'Sum', 'Mean', 'BitShift', 'PRelu']);
const ARITH = { Add: (a, b) => a + b, Sub: (a, b) => a - b, Mul: (a, b) => a * b, Max: Math.max, Min: Math.min };

// mirrors: fm_runtime/model/preflight.py (_itemsize)
const item = (dtype) => ITEM[dtype] ?? 4;
// mirrors: fm_runtime/model/preflight.py (_count)
const count = (shape) => shape.reduce((a, d) => a * Math.max(d, 0), 1);

function signedVarints(r, range) {       // packed int64s, exact for |v| < 2**53 (shapes, repeats)
  const sub = r.sub(range), out = [];
  while (sub.pos < sub.end) {
    let v = 0n, shift = 0n;
    for (;;) {
      if (sub.pos >= sub.end || shift > 63n) throw new ProtoError('truncated varint');
      const b = sub.b[sub.pos++];
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) break;
      shift += 7n;
    }
    out.push(Number(BigInt.asIntN(64, v)));
  }
  return out;
}

function readTensor(r) {
  const t = { dims: [], dtype: 1, value: null, stored: 0, external: false };
  let raw = null, typed = null;
  for (const [f, w, v] of r.fields()) {
    if (f === 1) t.dims.push(...(w === 2 ? signedVarints(r, v) : [r.lastSigned()]));
    else if (f === 2 && w === 0) t.dtype = v;
    else if (f === 9 && w === 2) raw = v;
    else if ((f === 5 || f === 7) && w === 2) typed = signedVarints(r, v);
    else if ((f === 5 || f === 7) && w === 0) (typed ??= []).push(r.lastSigned());
    else if (f === 4 && w === 2) {
      const b = r.b.slice(v[0], v[1]);
      typed = Array.from(new Float32Array(b.buffer, b.byteOffset, Math.floor(b.length / 4)));
    } else if ((f === 6 || f === 10 || f === 13) && w === 2) { t.stored += v[1] - v[0]; t.external ||= f === 13; }
    else if (f === 14 && w === 0 && v === 1) t.external = true;
  }
  t.stored += raw ? raw[1] - raw[0] : (typed?.length ?? 0) * item(t.dtype);
  const n = t.dims.every((d) => d >= 0) ? count(t.dims) : -1;
  if (n >= 0 && n <= SMALL) {
    if (raw && raw[1] - raw[0] === n * item(t.dtype)) {
      const b = r.b.slice(raw[0], raw[1]), view = new DataView(b.buffer, b.byteOffset, b.length);
      if (t.dtype === 7) t.value = Array.from({ length: n }, (_, i) => Number(view.getBigInt64(8 * i, true)));
      else if (t.dtype === 6) t.value = Array.from({ length: n }, (_, i) => view.getInt32(4 * i, true));
      else if (t.dtype === 1) t.value = Array.from({ length: n }, (_, i) => view.getFloat32(4 * i, true));
    } else if (!raw && typed && typed.length === n && t.dtype !== 10) t.value = typed;
  }
  return t;
}

function readNode(r) {
  const n = { op: '', inputs: [], outputs: [], attrs: {} };
  for (const [f, w, v] of r.fields()) {
    if (w !== 2) continue;
    if (f === 1) n.inputs.push(text(r, v));
    else if (f === 2) n.outputs.push(text(r, v));
    else if (f === 4) n.op = text(r, v);
    else if (f === 5) {
      let name = '', value = null, ints = [];
      const a = r.sub(v);
      for (const [af, aw, av] of a.fields()) {
        if (af === 1 && aw === 2) name = text(r, av);
        else if (af === 3 && aw === 0) value = a.lastSigned();
        else if (af === 5 && aw === 2) value = readTensor(r.sub(av));
        else if (af === 8) ints = ints.concat(aw === 2 ? signedVarints(r, av) : [a.lastSigned()]);
        else if (af === 6 && aw === 2) value = readGraph(r, av);             // a Loop's or If's body
        else if (af === 11 && aw === 2) value = [...(Array.isArray(value) ? value : []), readGraph(r, av)];
      }
      n.attrs[name] = value ?? (ints.length ? ints : null);
    }
  }
  return n;
}

function readGraph(r, range) {
  const g = { graph: true, nodes: [], inits: {}, inputs: {} };
  for (const [gf, gw, gv] of r.sub(range).fields()) {
    if (gw !== 2) continue;
    if (gf === 1) g.nodes.push(readNode(r.sub(gv)));
    else if (gf === 5) {
      let name = '';
      for (const [tf, tw, tv] of r.sub(gv).fields()) if (tf === 8 && tw === 2) name = text(r, tv);
      g.inits[name] = readTensor(r.sub(gv));
    } else if (gf === 11) {
      const info = readValueInfo(r.sub(gv));
      g.inputs[info.name] = info.ranked ? info.shape : null;
    }
  }
  return g;
}

function readGraphs(bytes) {
  const r = new Reader(bytes), graphs = [];
  for (const [f, w, v] of r.fields()) {
    if (f === 7 && w === 2) {
      graphs.unshift(readGraph(r, v));
    } else if (f === 25 && w === 2) {
      const nodes = [];
      for (const [ff, fw, fv] of r.sub(v).fields()) if (ff === 4 && fw === 2) nodes.push(readNode(r.sub(fv)));
      graphs.push({ nodes, inits: {}, inputs: {} });
    }
  }
  return graphs;
}

// mirrors: fm_runtime/model/preflight.py (_broadcast)
function broadcast(...shapes) {
  const rank = Math.max(...shapes.map((s) => s.length));
  const padded = shapes.map((s) => [...Array(rank - s.length).fill(1), ...s]);
  return Array.from({ length: rank }, (_, k) => Math.max(...padded.map((s) => s[k])));
}

// mirrors: fm_runtime/model/preflight.py (_infer)
/** [shape, itemsize, value] of node n's first output, or null when it cannot be bounded. */
function infer(n, b) {
  const ins = n.inputs, first = ins[0] ? b.shape.get(ins[0]) : undefined, size = b.size.get(ins[0]) ?? 4;
  const vals = ins.map((i) => b.value.get(i)), lower = ins.map((i) => b.lower.has(i));
  const ints = (i, exact = false) => (ins[i] && !(exact && lower[i]) ? b.value.get(ins[i]) : undefined);
  const allKnown = ins.length > 0 && ins.every((i) => !i || b.shape.has(i));
  if (n.op === 'Constant') {
    const t = n.attrs.value;
    if (t && t.dims) return [t.dims.map((d) => Math.max(d, 0)), item(t.dtype), t.value];
    if (Array.isArray(n.attrs.value_ints)) return [[n.attrs.value_ints.length], 8, n.attrs.value_ints];
    if (typeof n.attrs.value_int === 'number') return [[], 8, [n.attrs.value_int]];
    return null;
  }
  if (UNARY.has(n.op) && first) return [first, size, n.op === 'Identity' ? vals[0] : undefined];
  if (n.op === 'Cast' && first) return [first, item(n.attrs.to ?? 1), vals[0]];
  if (BINARY.has(n.op) && allKnown) {
    const shape = broadcast(...ins.filter(Boolean).map((i) => b.shape.get(i)));
    let value;
    if (ARITH[n.op] && vals.length === 2 && vals.every((v) => v) && vals[0].length === vals[1].length
        && keepsBounds(n.op, vals, lower)) {
      value = vals[0].map((a, k) => ARITH[n.op](a, vals[1][k]));
    }
    return [shape, Math.max(...ins.filter(Boolean).map((i) => b.size.get(i))), value];
  }
  if (n.op === 'Concat' && allKnown) {
    const shapes = ins.filter(Boolean).map((i) => b.shape.get(i)), rank = shapes[0].length;
    if (rank === 0 || shapes.some((s) => s.length !== rank)) return null;
    const axis = (((n.attrs.axis ?? 0) % rank) + rank) % rank, shape = [...shapes[0]];
    shape[axis] = shapes.reduce((a, s) => a + s[axis], 0);
    return [shape, size, rank === 1 && vals.every((v) => v) ? vals.flat() : undefined];
  }
  if (n.op === 'Shape' && first) {              // exact of a constant, else a lower bound
    const dims = first.slice(n.attrs.start ?? 0, n.attrs.end ?? first.length);
    return [[dims.length], 8, dims];
  }
  if ((n.op === 'Unsqueeze' || n.op === 'Squeeze') && first) {
    const axes = ins[1] ? ints(1, true) : n.attrs.axes;
    if (!axes) return null;
    let shape = [...first];
    if (n.op === 'Unsqueeze') {
      const rank = shape.length + axes.length;
      for (const a of axes.map((x) => ((x % rank) + rank) % rank).sort((p, q) => p - q)) shape.splice(a, 0, 1);
    } else {
      const drop = new Set(axes.map((x) => ((x % Math.max(shape.length, 1)) + shape.length) % Math.max(shape.length, 1)));
      shape = shape.filter((_, k) => !drop.has(k));
    }
    return [shape, size, vals[0]];
  }
  if (n.op === 'ConstantOfShape') {
    const shape = ints(0), t = n.attrs.value;
    return shape ? [shape.map((d) => Math.max(d, 0)), t && t.dims ? item(t.dtype) : 4] : null;
  }
  if (n.op === 'Expand' && ins.length > 1) {
    const shape = ints(1);
    return shape ? [broadcast(first ?? [], shape.map((d) => Math.max(d, 1))), size] : null;
  }
  if (n.op === 'Tile' && first && ins.length > 1) {
    const reps = ints(1);
    return reps && reps.length === first.length ? [first.map((d, k) => d * Math.max(reps[k], 0)), size] : null;
  }
  if (n.op === 'Range' && ins.length === 3 && vals.every((v) => v && v.length === 1) && !lower.some(Boolean)) {
    const [start, limit, delta] = vals.map((v) => Number(v[0]));
    const c = delta && [start, limit, delta].every(Number.isFinite) ? Math.max(Math.ceil((limit - start) / delta), 0) : 0;
    return [[c], size];
  }
  if (n.op === 'Resize' && first) {
    const sizes = ins[3] ? ints(3) : undefined, scales = ins[2] ? vals[2] : undefined;
    if (sizes && sizes.length === first.length) return [sizes.map((d) => Math.max(d, 0)), size];
    if (scales && scales.length === first.length && scales.every(Number.isFinite)) {
      return [first.map((d, k) => Math.floor(d * Math.max(scales[k], 0))), size];
    }
    return null;
  }
  if (n.op === 'Gemm' && ins.length > 1 && b.shape.has(ins[0]) && b.shape.has(ins[1])) {
    const a = b.shape.get(ins[0]), c = b.shape.get(ins[1]);
    if (a.length === 2 && c.length === 2) return [[n.attrs.transA ? a[1] : a[0], n.attrs.transB ? c[0] : c[1]], size];
  }
  if (n.op === 'MatMul' && ins.length > 1 && b.shape.has(ins[0]) && b.shape.has(ins[1])) {
    const a = b.shape.get(ins[0]), c = b.shape.get(ins[1]);
    if (a.length >= 1 && c.length >= 2) return [[...broadcast(a.slice(0, -2), c.slice(0, -2)), ...(a.length > 1 ? [a[a.length - 2]] : []), c[c.length - 1]], size];
  }
  return null;
}

// mirrors: fm_runtime/model/preflight.py (_keeps_bounds)
/** Whether op of these values bounds op of the true values from below, where `lower` marks the
 * values that are only lower bounds. */
function keepsBounds(op, vals, lower) {
  if (!lower.some(Boolean)) return true;
  if (op === 'Mul') return vals.every((v) => v.every((x) => x >= 0));
  return op === 'Add' || op === 'Max' || op === 'Min' || (op === 'Sub' && !lower[1]);
}

// mirrors: fm_runtime/model/preflight.py (_describe)
function describe(bytes) {
  for (const [unit, scale] of [['TiB', 2 ** 40], ['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]]) {
    if (bytes >= scale) return `${(bytes / scale).toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 })} ${unit}`;
  }
  return `${bytes} bytes`;
}

// mirrors: fm_runtime/model/preflight.py (allowance)
/** Bytes the static parts of a graph in a file of this size may take. */
export const allowance = (fileBytes) => Math.max(LIMITS.static_bytes_floor, LIMITS.static_bytes_per_file_byte * fileBytes);

// mirrors: fm_runtime/model/preflight.py (_check_loops)
/**
 * Every Loop (at any depth) must run a trip count the file fixes, nested loops together at most
 * limits.max_loop_trips times (If and Scan end by themselves): as preflight.py's _check_loops.
 */
function checkLoops(g, where, outer, trips) {
  const consts = new Map(outer);
  for (const [name, t] of Object.entries(g.inits)) if (t.value) consts.set(name, t.value);
  for (const n of g.nodes) {
    if (n.op === 'Constant' && n.attrs.value?.value && n.outputs[0]) consts.set(n.outputs[0], n.attrs.value.value);
    let runs = trips;
    if (n.op === 'Loop') {
      const m = n.inputs[0] ? consts.get(n.inputs[0]) : null, name = n.outputs[0] ?? n.op;
      if (!m || m.length !== 1) {
        throw new ModelError(`${where}: its Loop node making '${name}' has no trip count the file fixes, so it may run `
          + 'forever; refused (load it with allowLoops: true only if you trust the file\'s producer)');
      }
      runs = trips * Math.max(Number(m[0]), 0);
      if (runs > LIMITS.max_loop_trips) {
        throw new ModelError(`${where}: its Loop node making '${name}' runs ${runs.toLocaleString('en-US')} times`
          + `${trips > 1 ? ' (nested loops counted together)' : ''}, more than the ${LIMITS.max_loop_trips.toLocaleString('en-US')} `
          + 'a file may loop; refused (allowLoops: true lifts this for a trusted file)');
      }
    }
    for (const value of Object.values(n.attrs)) {
      for (const sub of Array.isArray(value) ? value : [value]) if (sub?.graph) checkLoops(sub, where, consts, runs);
    }
  }
}

// mirrors: fm_runtime/model/preflight.py (check_graph_memory, _check)
/**
 * Throw ResourceError when the model in `bytes` is bound to take more than `allowed` bytes, or
 * ModelError when it holds a Loop the file does not bound (unless allowLoops).
 */
export function checkGraphMemory(bytes, where, allowed = allowance(bytes.length), { allowLoops = false } = {}) {
  let graphs;
  try {
    graphs = readGraphs(bytes);
  } catch (e) {
    if (e instanceof ProtoError || e instanceof RangeError) return;      // the reader's own checks say what it is
    throw e;
  }
  for (const g of graphs) {
    if (!allowLoops) checkLoops(g, where, new Map(), 1);
    const b = { shape: new Map(), size: new Map(), value: new Map(), constant: new Set(), lower: new Set() };
    for (const [name, dims] of Object.entries(g.inputs)) {
      if (dims) { b.shape.set(name, dims.map((d) => (Number.isInteger(d) && d > 0 ? d : 1))); b.size.set(name, 4); }
      const nbytes = dims && !(name in g.inits) ? count(b.shape.get(name)) * 4 : 0;
      if (nbytes > Math.floor(allowed / PER_ROW_SHARE)) {        // what a caller feeds, again for every row
        throw new ResourceError(`${where}: its input '${name}' takes at least ${describe(nbytes)} for one row, more than `
          + `the ${describe(Math.floor(allowed / PER_ROW_SHARE))} a file of this size may take there (refused before loading)`);
      }
    }
    for (const [name, t] of Object.entries(g.inits)) {
      if (t.external || count(t.dims) * item(t.dtype) > Math.max(t.stored, 64)) continue;
      b.shape.set(name, t.dims.map((d) => Math.max(d, 0))); b.size.set(name, item(t.dtype)); b.constant.add(name);
      if (t.value) b.value.set(name, t.value);
    }
    let folded = 0;
    for (const n of g.nodes) {
      let out = null;
      try { out = infer(n, b); } catch { out = null; }
      if (!out || !n.outputs[0]) continue;
      const [shape, itemsize, value] = out, nbytes = count(shape) * itemsize;
      const constant = n.op === 'Constant' || (n.inputs.length > 0 && n.inputs.every((i) => !i || b.constant.has(i)));
      const limit = constant ? allowed : Math.floor(allowed / PER_ROW_SHARE);
      if (nbytes > limit) {
        throw new ResourceError(`${where}: its ${n.op} node making '${n.outputs[0]}' takes at least ${describe(nbytes)}`
          + `${constant ? '' : ' for one row'}, more than the ${describe(limit)} a file of this size may take there (refused before loading)`);
      }
      if (constant) {
        folded += nbytes;
        if (folded > allowed) {
          throw new ResourceError(`${where}: its constants fold into at least ${describe(folded)} (at ${n.op} node `
            + `'${n.outputs[0]}'), more than the ${describe(allowed)} a file of this size may take for its graph (refused before loading)`);
        }
      }
      b.shape.set(n.outputs[0], shape); b.size.set(n.outputs[0], itemsize);
      if (value && value.length <= SMALL) {
        b.value.set(n.outputs[0], value);
        if (!constant && (n.op === 'Shape' || n.inputs.some((i) => b.lower.has(i)))) b.lower.add(n.outputs[0]);
      }
      if (constant) b.constant.add(n.outputs[0]);
    }
  }
}
