// The seeded noise stream of the contract, the same values as Python's fm_runtime.solve.noise:
// row r of the noise for seed S lies in block b = floor(r / 65536), and block b holds
//   numpy.random.default_rng([S, b]).standard_normal((65536, ...shape), dtype=float32)
// so `sample({ n, seed })` draws the very noise `fm-run sample -n N --seed S` draws, and the same
// seed gives the same samples in both languages. Reimplemented from the published algorithms
// numpy documents: SeedSequence's entropy hashing (O'Neill's seed_seq design), PCG64 (XSL-RR
// 128/64) and the 256-level ziggurat of Marsaglia & Tsang (2000) in numpy's float32 variant,
// with the ziggurat's tables computed here from their definition.
// Bit for bit, except in the ziggurat's tail (|x| > 3.65, about 1 value in 4000): there numpy
// calls the platform's log1pf, which glibc does not round correctly, and this uses the correctly
// rounded one, so about 1 value in a million differs by one float32 ulp; where such a difference
// changes the tail's acceptance test (measured: 2 of 144 blocks of 2^18 values), the rest of
// that 65 536-row block differs. numpy's own stream differs the same way between C libraries.

const BLOCK = 65536;
const M32 = 0xffffffffn, M128 = (1n << 128n) - 1n;
const PCG_MULT = (2549297995355413924n << 64n) + 4865540595714422341n;

// --- SeedSequence: entropy words -> a pool of 4 words -> generate_state ----------------------
const INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875, INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
const MIX_L = 0xca01f9dd, MIX_R = 0x4973f715;

function words(n) {            // a non-negative integer as 32-bit words, least significant first
  let v = BigInt(n);
  if (v === 0n) return [0];
  const out = [];
  while (v > 0n) { out.push(Number(v & M32)); v >>= 32n; }
  return out;
}

function seedState(entropy, count) {
  let hashA = INIT_A;
  const hashmix = (value) => {
    value = (value ^ hashA) >>> 0;
    hashA = Math.imul(hashA, MULT_A) >>> 0;
    value = Math.imul(value, hashA) >>> 0;
    return (value ^ (value >>> 16)) >>> 0;
  };
  const mix = (x, y) => {
    const r = (Math.imul(MIX_L, x) - Math.imul(MIX_R, y)) >>> 0;
    return (r ^ (r >>> 16)) >>> 0;
  };
  const pool = [0, 1, 2, 3].map((i) => hashmix(i < entropy.length ? entropy[i] : 0));
  for (let s = 0; s < 4; s++) {
    for (let d = 0; d < 4; d++) if (s !== d) pool[d] = mix(pool[d], hashmix(pool[s]));
  }
  for (let s = 4; s < entropy.length; s++) {
    for (let d = 0; d < 4; d++) pool[d] = mix(pool[d], hashmix(entropy[s]));
  }
  let hashB = INIT_B;
  const out = [];
  for (let i = 0; i < count; i++) {
    let v = (pool[i % 4] ^ hashB) >>> 0;
    hashB = Math.imul(hashB, MULT_B) >>> 0;
    v = Math.imul(v, hashB) >>> 0;
    out.push((v ^ (v >>> 16)) >>> 0);
  }
  return out;
}

// --- PCG64 as numpy seeds it, with its 32-bit draws (two per 64-bit output, low half first) ---
// The 128-bit state is eight 16-bit limbs in doubles (every partial sum stays below 2^53, so the
// arithmetic is exact): a step is 36 multiply-adds, against a BigInt product and three masks that
// allocate, which made the noise stream 6 M values/s.
const limbs = (v) => Float64Array.from({ length: 8 }, (_, i) => Number((v >> BigInt(16 * i)) & 0xffffn));
const [M0, M1, M2, M3, M4, M5, M6, M7] = limbs(PCG_MULT);

class PCG64 {
  constructor(entropy) {
    const w = seedState(entropy, 8).map(BigInt);
    const u64 = (i) => w[2 * i] | (w[2 * i + 1] << 32n);
    const initState = (u64(0) << 64n) | u64(1), initSeq = (u64(2) << 64n) | u64(3);
    const inc = ((initSeq << 1n) | 1n) & M128;
    // numpy's seeding: state 0 stepped (which gives inc), plus the seed's state, stepped again
    this.inc = limbs(inc);
    this.s = limbs((((inc + initState) & M128) * PCG_MULT + inc) & M128);
    this.spare = -1;
  }

  step() {
    // state * MULT + inc, limb by limb: column k sums s[i] * MULT[k - i] for i <= k (unrolled;
    // a column is below 2^36, its carry below 2^20)
    const s = this.s, c = this.inc;
    const s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3], s4 = s[4], s5 = s[5], s6 = s[6], s7 = s[7];
    let acc = c[0] + s0 * M0;
    let q = Math.floor(acc / 65536); s[0] = acc - q * 65536;         // not %: fmod is a library call
    acc = q + c[1] + s0 * M1 + s1 * M0;
    q = Math.floor(acc / 65536); s[1] = acc - q * 65536;
    acc = q + c[2] + s0 * M2 + s1 * M1 + s2 * M0;
    q = Math.floor(acc / 65536); s[2] = acc - q * 65536;
    acc = q + c[3] + s0 * M3 + s1 * M2 + s2 * M1 + s3 * M0;
    q = Math.floor(acc / 65536); s[3] = acc - q * 65536;
    acc = q + c[4] + s0 * M4 + s1 * M3 + s2 * M2 + s3 * M1 + s4 * M0;
    q = Math.floor(acc / 65536); s[4] = acc - q * 65536;
    acc = q + c[5] + s0 * M5 + s1 * M4 + s2 * M3 + s3 * M2 + s4 * M1 + s5 * M0;
    q = Math.floor(acc / 65536); s[5] = acc - q * 65536;
    acc = q + c[6] + s0 * M6 + s1 * M5 + s2 * M4 + s3 * M3 + s4 * M2 + s5 * M1 + s6 * M0;
    q = Math.floor(acc / 65536); s[6] = acc - q * 65536;
    acc = q + c[7] + s0 * M7 + s1 * M6 + s2 * M5 + s3 * M4 + s4 * M3 + s5 * M2 + s6 * M1 + s7 * M0;
    q = Math.floor(acc / 65536); s[7] = acc - q * 65536;
  }

  next32() {
    if (this.spare >= 0) { const v = this.spare; this.spare = -1; return v; }
    this.step();
    const s = this.s;
    // XSL-RR: (hi ^ lo) rotated right by hi's top 6 bits, as two 32-bit halves
    const a = ((s[1] * 65536 + s[0]) ^ (s[5] * 65536 + s[4])) >>> 0;
    const b = ((s[3] * 65536 + s[2]) ^ (s[7] * 65536 + s[6])) >>> 0;
    const rot = s[7] >>> 10;
    const lo = rot >= 32 ? b : a, hi = rot >= 32 ? a : b, r = rot & 31;
    if (r === 0) {
      this.spare = hi;
      return lo;
    }
    this.spare = ((hi >>> r) | (lo << (32 - r))) >>> 0;
    return ((lo >>> r) | (hi << (32 - r))) >>> 0;
  }

  nextFloat() { return Math.fround((this.next32() >>> 8) * (1 / 16777216)); }
}

// --- the float32 ziggurat: tables from the definition (r, v of Marsaglia & Tsang, 256 levels) --
const R = 3.6541528853610088, V = 0.00492867323399;
const f = (x) => Math.exp(-0.5 * x * x);
const KI = new Uint32Array(256), WI = new Float32Array(256), FI = new Float32Array(256);
{
  const x = new Float64Array(256);
  x[255] = R;
  for (let i = 255; i > 1; i--) x[i - 1] = Math.sqrt(-2 * Math.log(V / x[i] + f(x[i])));
  KI[0] = Math.floor((R * f(R) / V) * 2 ** 23);
  WI[0] = V / f(R) / 2 ** 23;
  FI[0] = 1;
  KI[1] = 0;
  for (let i = 1; i < 256; i++) {
    if (i > 1) KI[i] = Math.floor((x[i - 1] / x[i]) * 2 ** 23);
    WI[i] = x[i] / 2 ** 23;
    FI[i] = f(x[i]);
  }
}
const R_F = Math.fround(R), INV_R_F = Math.fround(1 / R);
const log1pf = (v) => Math.fround(Math.log1p(v));

function standardNormalF(g) {
  for (;;) {
    const r = g.next32();
    const idx = r & 0xff, sign = (r >>> 8) & 1, rabs = (r >>> 9) & 0x7fffff;
    let x = Math.fround(rabs * WI[idx]);
    if (sign) x = -x;
    if (rabs < KI[idx]) return x;
    if (idx === 0) {
      for (;;) {
        const xx = Math.fround(-INV_R_F * log1pf(-g.nextFloat()));
        const yy = -log1pf(-g.nextFloat());
        if (Math.fround(yy + yy) > Math.fround(xx * xx)) {
          return ((rabs >>> 8) & 1) ? -Math.fround(R_F + xx) : Math.fround(R_F + xx);
        }
      }
    } else if (Math.fround(Math.fround((FI[idx - 1] - FI[idx]) * g.nextFloat()) + FI[idx]) < Math.exp(-0.5 * x * x)) {
      return x;
    }
  }
}

// mirrors: fm_runtime/solve/noise.py (new_seed)
/** A fresh random seed (Python's fm-run reports its own the same way: an integer below 2^63). */
export function newSeed() {
  return Math.floor(Math.random() * 2 ** 52);
}

// mirrors: fm_runtime/solve/noise.py (noise_rows)
/** Rows [start, stop) of the noise for `seed` (an integer >= 0, Number or BigInt), each row
 * `dim` float32 values, as one Float32Array: the values of Python's noise_rows. */
export function noiseRows(seed, start, stop, dim) {
  const out = new Float32Array((stop - start) * dim);
  let at = 0;
  for (let row = start; row < stop;) {
    const block = Math.floor(row / BLOCK), offset = row - block * BLOCK;
    const rows = Math.min(stop - row, BLOCK - offset);
    const g = new PCG64([...words(seed), ...words(block)]);
    for (let k = offset * dim; k > 0; k--) standardNormalF(g);       // rows before `start` in its block
    for (let k = rows * dim; k > 0; k--) out[at++] = standardNormalF(g);
    row += rows;
  }
  return out;
}
