// Standard-normal noise for sample({n, seed}) when no noise is passed in: a small seeded generator
// (splitmix32 + Box-Muller). It is this package's own stream, not numpy's: to reproduce a Python
// run, pass its noise in.

function splitmix32(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}

/** `count` standard-normal float32 values; seed null draws a fresh seed. */
export function gaussianNoise(count, seed = null) {
  const u = splitmix32(seed ?? Math.floor(Math.random() * 2 ** 32));
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u())), a = 2 * Math.PI * u();
    out[i] = r * Math.cos(a);
    if (i + 1 < count) out[i + 1] = r * Math.sin(a);
  }
  return out;
}
