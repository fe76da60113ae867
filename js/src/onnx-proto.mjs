// A minimal protobuf reader for what the sampler needs from an ONNX ModelProto: its metadata_props
// (the fm.* contract), the graph's inputs and outputs (names, element types, shapes), and whether a
// weight lives in external data. onnxruntime-web cannot report custom metadata, so the contract is
// read here from the bytes, the same way in browsers and in Node. Field numbers: onnx/onnx.proto3.

const WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5;
const ELEM_TYPES = {
  1: 'float', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 8: 'string',
  9: 'bool', 10: 'float16', 11: 'double', 12: 'uint32', 13: 'uint64', 14: 'complex64',
  15: 'complex128', 16: 'bfloat16',
};

export class ProtoError extends Error {}
export const UTF8_ERROR = 'a string is not valid UTF-8';

export class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.b = bytes; this.pos = start; this.end = end;
  }

  varint() {
    this.lastVarint = this.pos;
    let result = 0, mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new ProtoError('truncated varint');
      const byte = this.b[this.pos++];
      result += (byte & 0x7f) * mul;
      if (byte < 0x80) return result;        // exact below 2**53; larger values are never sizes we use
      mul *= 128;
    }
    throw new ProtoError('varint longer than 10 bytes');
  }

  /** Yields [field number, wire type, value]: a Number for varints, a sub-range for LEN fields. */
  * fields() {
    while (this.pos < this.end) {
      const tag = this.varint();
      const field = Math.floor(tag / 8), wire = tag % 8;
      if (field === 0) throw new ProtoError('field number 0');
      if (wire === WIRE_VARINT) yield [field, wire, this.varint()];
      else if (wire === WIRE_LEN) {
        const len = this.varint();
        if (len > this.end - this.pos) throw new ProtoError('length runs past the end');
        const sub = [this.pos, this.pos + len];
        this.pos += len;
        yield [field, wire, sub];
      } else if (wire === WIRE_I64 || wire === WIRE_I32) {
        const len = wire === WIRE_I64 ? 8 : 4;
        if (len > this.end - this.pos) throw new ProtoError('fixed field runs past the end');
        this.pos += len;
        yield [field, wire, null];
      } else throw new ProtoError(`unsupported wire type ${wire}`);
    }
  }

  sub([start, end]) { return new Reader(this.b, start, end); }

  /** The last varint read, as a signed 64-bit integer, exact (a Number; BigInt inside). */
  lastSigned() {
    let v = 0n, shift = 0n, pos = this.lastVarint;
    for (;;) {
      const b = this.b[pos++];
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return Number(BigInt.asIntN(64, v));
      shift += 7n;
    }
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function text(r, range) {
  try {
    return utf8.decode(r.b.subarray(range[0], range[1]));
  } catch {
    throw new ProtoError(UTF8_ERROR);
  }
}

function expectLen(wire, what) {
  if (wire !== WIRE_LEN) throw new ProtoError(`${what} has the wrong wire type`);
}

function readDim(r) {
  let dim = null;       // unknown, as onnxruntime reports it (Python: None)
  for (const [f, w, v] of r.fields()) {
    if (f === 1 && w === WIRE_VARINT) dim = v;
    else if (f === 2 && w === WIRE_LEN) dim = text(r, v);
  }
  return dim;
}

/** {name, type, shape, ranked}: ranked is false when the value declares no shape at all. */
export function readValueInfo(r) {
  const info = { name: '', type: 'unknown', shape: [], ranked: false };
  for (const [f, w, v] of r.fields()) {
    if (f === 1) { expectLen(w, 'a value name'); info.name = text(r, v); }
    if (f !== 2 || w !== WIRE_LEN) continue;
    for (const [tf, tw, tv] of r.sub(v).fields()) {           // TypeProto
      if (tf !== 1 || tw !== WIRE_LEN) { if (tw === WIRE_LEN) info.type = 'other'; continue; }
      const tensor = r.sub(tv);                               // TypeProto.Tensor
      for (const [ef, ew, ev] of tensor.fields()) {
        if (ef === 1 && ew === WIRE_VARINT) info.type = `tensor(${ELEM_TYPES[ev] ?? ev})`;
        if (ef === 2 && ew === WIRE_LEN) {
          info.ranked = true;
          for (const [df, dw, dv] of r.sub(ev).fields()) if (df === 1 && dw === WIRE_LEN) info.shape.push(readDim(r.sub(dv)));
        }
      }
    }
  }
  return info;
}

function readInitializer(r) {
  let name = '', external = false;
  for (const [f, w, v] of r.fields()) {
    if (f === 8 && w === WIRE_LEN) name = text(r, v);
    if ((f === 14 && w === WIRE_VARINT && v === 1) || (f === 13 && w === WIRE_LEN)) external = true;
  }
  return { name, external };
}

function readGraph(r) {
  const g = { inputs: [], outputs: [], initializers: new Set(), externalData: false };
  for (const [f, w, v] of r.fields()) {
    if (w !== WIRE_LEN) continue;
    if (f === 11) g.inputs.push(readValueInfo(r.sub(v)));
    else if (f === 12) g.outputs.push(readValueInfo(r.sub(v)));
    else if (f === 5) {
      const init = readInitializer(r.sub(v));
      g.initializers.add(init.name);
      g.externalData ||= init.external;
    }
  }
  return g;
}

/**
 * Parse an ONNX ModelProto's bytes (Uint8Array). Returns {irVersion, opsets, metadata, inputs,
 * outputs, externalData}; inputs exclude initializers (as onnxruntime lists them), and each
 * input/output is {name, type: 'tensor(float)'..., shape: [int | string | null]}.
 * Throws ProtoError when the bytes are not a well-formed ModelProto with a graph.
 */
export function readModel(bytes) {
  const r = new Reader(bytes);
  const model = { irVersion: 0, opsets: {}, metadata: {}, graph: null };
  for (const [f, w, v] of r.fields()) {
    if (f === 1 && w === WIRE_VARINT) model.irVersion = v;
    else if (f === 7) { expectLen(w, 'the graph'); model.graph = readGraph(r.sub(v)); }
    else if (f === 8 && w === WIRE_LEN) {
      let domain = '', version = 0;
      for (const [of, ow, ov] of r.sub(v).fields()) {
        if (of === 1 && ow === WIRE_LEN) domain = text(r, ov);
        if (of === 2 && ow === WIRE_VARINT) version = ov;
      }
      model.opsets[domain] = version;
    } else if (f === 14) {
      expectLen(w, 'a metadata entry');
      let key = '', value = '';
      for (const [mf, mw, mv] of r.sub(v).fields()) {
        if (mf === 1 && mw === WIRE_LEN) key = text(r, mv);
        if (mf === 2 && mw === WIRE_LEN) value = text(r, mv);
      }
      model.metadata[key] = value;
    }
  }
  if (!model.graph || !model.irVersion) throw new ProtoError('no graph or no IR version');
  const { inputs, outputs, initializers, externalData } = model.graph;
  return {
    irVersion: model.irVersion, opsets: model.opsets, metadata: model.metadata,
    inputs: inputs.filter((i) => !initializers.has(i.name)), outputs, externalData,
  };
}
