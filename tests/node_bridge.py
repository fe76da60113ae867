"""Run requests through the JavaScript sampler on onnxruntime-node, for parity tests: arrays go
as {data, dims}, results come back as numpy arrays (or the refusal's error class and key)."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

JS = Path(__file__).resolve().parents[1] / "js"

needs_node = pytest.mark.skipif(shutil.which("node") is None or not (JS / "node_modules" / "onnxruntime-node").is_dir(),
                                reason="node or js/node_modules (npm ci in js/) is missing")

SCRIPT = """
import { readFileSync } from 'node:fs';
import { load } from %(node)s;
const jobs = JSON.parse(readFileSync(%(jobs)s, 'utf8'));
const typed = (v) => (v && v.dims && v.uint ? { data: BigUint64Array.from(v.data, BigInt), dims: v.dims }
  : v && v.dims && v.int ? { data: BigInt64Array.from(v.data, BigInt), dims: v.dims }
  : v && v.dims ? { data: Float32Array.from(v.data), dims: v.dims } : v);
const out = [];
for (const job of jobs) {
  let s;
  try {
    s = await load(job.path, job.options);
  } catch (e) {      // a refused file: its refusal stands for each of its requests
    for (const r of job.requests) out.push({ error: e.name, key: e.key ?? null, message: e.message });
    continue;
  }
  for (const r of job.requests) {
    const req = { ...r, cond: r.cond && Object.fromEntries(Object.entries(r.cond).map(([k, v]) => [k, typed(v)])) };
    if (r.nullCond) req.nullCond = Object.fromEntries(Object.entries(r.nullCond).map(([k, v]) => [k, typed(v)]));
    if (r.noise) req.noise = Float32Array.from(r.noise.data);
    if (!r.cond) delete req.cond;
    try {
      const clock = performance.now();
      const x = await s.sample(req);
      const ms = performance.now() - clock;
      out.push({ dims: x.dims, data: job.timing ? [] : Array.from(x.data), stageCalls: s.stageCalls ?? 0, ms });
    } catch (e) {
      out.push({ error: e.name, key: e.key ?? null, message: e.message });
    }
  }
}
console.log(JSON.stringify(out));
"""


def arg(a: np.ndarray) -> dict:
    a = np.asarray(a)
    if a.dtype.kind == "u":          # as decimal strings: JSON numbers past 2^53 would lose digits
        return {"data": [str(v) for v in a.ravel().tolist()], "dims": list(a.shape), "int": True, "uint": True}
    return {"data": a.ravel().tolist(), "dims": list(a.shape), "int": a.dtype.kind in "iu"}


def node_sample(tmp_path: Path, jobs: list[tuple], timing: bool = False) -> list:
    """jobs: [(model path, [request, ...][, load options])], a request as sample() takes it with numpy arrays for
    noise and the conditions. Returns (samples, condition-stage calls so far) or {"error", "key",
    "message"} per request; with `timing`, (None, calls, milliseconds the sample() call took)."""
    payload = [{"path": str(p), "timing": timing, "options": more[0] if more else {},
                "requests": [{k: ({c: arg(a) for c, a in v.items()} if k in ("cond", "nullCond") else
                                  arg(v) if k == "noise" else v) for k, v in r.items()} for r in reqs]}
               for p, reqs, *more in jobs]
    (tmp_path / "jobs.json").write_text(json.dumps(payload))
    script = tmp_path / "bridge.mjs"
    script.write_text(SCRIPT % {"node": json.dumps((JS / "src" / "node.mjs").as_uri()),
                                "jobs": json.dumps(str(tmp_path / "jobs.json"))})
    p = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=300, cwd=JS)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(p.stdout.strip().splitlines()[-1])
    if timing:
        return [r if "error" in r else (None, r["stageCalls"], r["ms"]) for r in results]
    return [r if "error" in r else (np.array(r["data"], np.float32).reshape(r["dims"]), r["stageCalls"]) for r in results]
