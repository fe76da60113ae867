"""One contract, one test body, every backend and both languages (the shape of diffusers'
SchedulerCommonTest): the host loop untiled and tiled over threads, the device loop (here on the
CPU provider), the baked graph and the bound baked graph, and the JavaScript sampler on
onnxruntime-node over both a velocity file and a baked one.

Each case sends the same requests through its backend and checks the same things:
- samples for given noise equal an independent reference: tests/runtime/fixtures/tiny.onnx's
  velocity called through a bare onnxruntime session and solved by the tableau stepper (for a
  baked file: the solver and steps its metadata declares); exactly where the arithmetic is the same
  (the host and device loops), within float32 rounding where it is not (a graph's own solve, JS);
- a seeded request gives the reference solve of the seeded noise stream (noise_rows), as float32
  [n, 2], and reports the network evaluations its solve took;
- NaN/Inf: a solve whose rows blow up is refused with NumericalError saying where (the step the
  reference blows up at, where the backend can see steps), or, with keep_partial (Python), keeps
  the other rows and reports where; JS, which has no keep_partial, refuses the option;
- a cancel (CancelToken in Python, an AbortSignal in JS) given before or during the request raises
  Interrupted("cancelled") promptly;
- labels and guidance on tiny_cond.onnx (v_u + w (v_c - v_u), the null label for v_u) give the
  reference, and a label out of range is refused; a baked file refuses labels.

The requests of a JS case run in one node process (tests/node_bridge.py's way of driving node).
The shipped model (fm_runtime/assets/moons.onnx), solved with the defaults it declares, gets the
seeded check on every backend that takes a velocity file.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import fm_runtime
from fm_runtime.solve.noise import noise_rows
from fm_runtime.solve.solvers import SOLVERS, integrate_inplace

from .conftest import FIXTURES, REPO, TINY, TINY_BAKED, read_metadata

SHIPPED = REPO / "fm_runtime" / "assets" / "moons.onnx"
MODELS = {"tiny": TINY, "tiny_baked": TINY_BAKED, "tiny_cond": FIXTURES / "tiny_cond.onnx", "shipped": SHIPPED}

JS = REPO / "js"
HAS_NODE = shutil.which("node") is not None and (JS / "node_modules" / "onnxruntime-node").is_dir()
N, SEED, STEPS, SOLVER, GUIDANCE = 300, 5, 4, "midpoint", 1.5
Z = noise_rows(11, 0, N, (2,))
BLOWUP = Z.copy()
BLOWUP[::7] = 3e38                     # the first layer overflows to Inf on these rows
LABELS = np.arange(N) % 2
BIG = 1_000_000                        # rows of the request that is cancelled while it runs
CANCEL_AFTER_S = 0.05
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")     # BLOWUP's rows


@dataclass(frozen=True)
class Backend:
    name: str
    baked: bool                        # solves tiny_baked.onnx (else tiny.onnx and tiny_cond.onnx)
    options: dict                      # fm_runtime.load's keywords, or JS load()'s options
    kind: str                          # the Python backend class load() must choose; "js": Node
    sees_steps: bool = True            # NaN reports name the step (else: where it was noticed)
    noticed: str = ""                  # ... that place, as the message says it
    exact: bool = True                 # the same float32 arithmetic as the reference
    tiles: int = 1                     # tiles the N-row requests must be cut in (at least)

    @property
    def js(self) -> bool:
        return self.kind == "js"


BACKENDS = [
    Backend("host loop", False, {"tile": 0}, "HostLoop"),
    Backend("host loop tiled over threads", False, {"tile": 64, "threads": 2}, "HostLoop", tiles=5),
    Backend("device loop (CPU provider)", False, {"tile": 0, "device_resident": True}, "DeviceBackend",
            sees_steps=False, noticed="in the device loop's output"),
    Backend("baked graph", True, {"tile": 0}, "BakedGraph", sees_steps=False,
            noticed="in the baked graph's output", exact=False),
    Backend("bound baked graph", True, {"tile": 0, "device_resident": True}, "BoundBakedGraph", sees_steps=False,
            noticed="in the baked graph's output", exact=False),
    Backend("js", False, {"workers": 1, "tile": 64}, "js"),
    Backend("js baked", True, {"workers": 1}, "js", sees_steps=False, noticed="at step 3 of 3 (t = 1.000)", exact=False),
]
# float32 rounding of a solve that is not the reference's own arithmetic (a baked graph's fused
# steps): measured 4.8e-7 (1 ulp at 4) on these samples
ATOL = 2e-6


@dataclass
class Reference:
    """What every backend must give: solves through a bare onnxruntime session."""
    solver: str
    steps: int
    schedule: str | None
    x: np.ndarray = field(repr=False)             # from Z
    seeded: np.ndarray = field(repr=False)        # from noise_rows(SEED, 0, N)
    blowup: np.ndarray = field(repr=False)        # from BLOWUP
    blows_at: tuple[int, float] = (0, 0.0)        # the first step with a non-finite state, its time
    guided: np.ndarray | None = field(default=None, repr=False)    # tiny_cond, LABELS, GUIDANCE
    shipped: np.ndarray | None = field(default=None, repr=False)   # moons.onnx's own defaults, seeded
    shipped_nfe: int = 0

    @property
    def nfe(self) -> int:
        return SOLVERS[self.solver].evals_per_step * self.steps


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _solve(f, z: np.ndarray, steps: int, solver: str, schedule=None, on_step=None) -> np.ndarray:
    return integrate_inplace(f, z.copy(), steps, solver, on_step, schedule)[0]


def _reference(baked: bool) -> Reference:
    if baked:       # the solve the baked file declares, of the velocity it was baked from
        declared = json.loads(read_metadata(TINY_BAKED)["fm.baked"])
        solver, steps = declared["solver"], declared["steps"]
        schedule = json.loads(read_metadata(TINY_BAKED).get("fm.default_schedule", "null"))
    else:
        solver, steps, schedule = SOLVER, STEPS, None
    velocity = _session(TINY)

    def f(x, t):
        return velocity.run(["v"], {"x": x, "t": np.full(len(x), t, np.float32)})[0]
    bad = []

    def on_step(x, step, t):
        if not bad and not np.isfinite(x).all():
            bad.append((step, t))
    ref = Reference(solver, steps, schedule, _solve(f, Z, steps, solver, schedule), _solve(
        f, noise_rows(SEED, 0, N, (2,)), steps, solver, schedule), _solve(f, BLOWUP, steps, solver, schedule, on_step))
    ref.blows_at = bad[0]
    if not baked:
        cond = _session(FIXTURES / "tiny_cond.onnx")
        null = np.full(N, int(read_metadata(FIXTURES / "tiny_cond.onnx")["fm.num_classes"]), np.int64)

        def guided(x, t):     # both halves in one call of 2N rows, as the runtimes batch them
            v = cond.run(["v"], {"x": np.concatenate([x, x]), "t": np.full(2 * N, t, np.float32),
                                 "y": np.concatenate([LABELS, null]).astype(np.int64)})[0]
            return v[N:] + np.float32(GUIDANCE) * (v[:N] - v[N:])
        ref.guided = _solve(guided, Z, steps, solver)
        shipped, meta = _session(SHIPPED), read_metadata(SHIPPED)
        solver, steps = json.loads(meta["fm.default_solver"]), json.loads(meta["fm.default_steps"])
        ref.shipped = _solve(lambda x, t: shipped.run(["v"], {"x": x, "t": np.full(len(x), t, np.float32)})[0],
                             noise_rows(SEED, 0, N, (2,)), steps, solver)
        ref.shipped_nfe = SOLVERS[solver].evals_per_step * steps
    return ref


@pytest.fixture(scope="module")
def references() -> dict[bool, Reference]:
    return {baked: _reference(baked) for baked in (False, True)}


def _requests(backend: Backend, ref: Reference) -> dict[str, dict]:
    """The requests of the contract, as Python's sample() takes them (the JS bridge renames)."""
    model = "tiny_baked" if backend.baked else "tiny"
    solve = {} if backend.baked else {"steps": STEPS, "solver": SOLVER}
    cond = "tiny_baked" if backend.baked else "tiny_cond"
    long = {} if backend.baked else {"steps": 50, "solver": "euler"}
    return {
        "noise": {"model": model, "noise": Z, **solve},
        "seeded": {"model": model, "n": N, "seed": SEED, **solve},
        "other seed": {"model": model, "n": N, "seed": SEED + 1, **solve},
        "blowup": {"model": model, "noise": BLOWUP, **solve},
        "blowup kept": {"model": model, "noise": BLOWUP, "keep_partial": True, **solve},
        "cancelled before": {"model": model, "n": 4, "seed": 0, "cancel": "before", **solve},
        "cancelled during": {"model": model, "n": BIG, "seed": 0, "cancel": "during", **long},
        "guided": {"model": cond, "noise": Z, "labels": LABELS, "guidance": GUIDANCE, **solve},
        "label 0": {"model": cond, "noise": Z, "labels": 0, **solve},
        "label 1": {"model": cond, "noise": Z, "labels": 1, **solve},
        "label out of range": {"model": cond, "noise": Z[:4], "labels": 3, **solve},
        **({} if backend.baked else {"shipped": {"model": "shipped", "n": N, "seed": SEED}}),
    }


def _run_python(backend: Backend, requests: dict[str, dict]) -> dict[str, dict]:
    samplers: dict[str, fm_runtime.Sampler] = {}
    out = {}
    for name, req in requests.items():
        req = dict(req)
        model = req.pop("model")
        if model not in samplers:
            samplers[model] = fm_runtime.load(MODELS[model], **backend.options)
            assert type(samplers[model].backend).__name__ == backend.kind, (model, samplers[model].backend)
            assert len(samplers[model].tiler.bounds(N, None, 2)) >= backend.tiles
        timer, when = None, req.pop("cancel", None)
        if when:
            req["cancel"] = token = fm_runtime.CancelToken()
            if when == "before":
                token.cancel()
            else:
                timer = _Timer(CANCEL_AFTER_S, token.cancel)
                timer.start()
        try:
            r = samplers[model].run(**req)
            out[name] = {"samples": r.samples, "nfe": r.nfe, "nonfinite": [where for *_, where in r.nonfinite]}
        except fm_runtime.FmError as e:
            out[name] = {"error": type(e).__name__, "key": e.key, "message": str(e)}
        ended = time.perf_counter()
        if timer is not None:
            timer.join()
            out[name]["stopped_after_s"] = ended - timer.fired_at
    return out


class _Timer(threading.Timer):
    """A Timer that notes when it fired."""
    fired_at = float("inf")

    def run(self):
        self.fired_at = time.perf_counter()
        super().run()


# the requests in a JS case's node process: arrays go as {data, dims}, "before"/"during" become an
# AbortSignal aborted before the call or CANCEL_AFTER_S into it
NODE_SCRIPT = r"""
import { readFileSync } from 'node:fs';
import { load } from %(node)s;
const { options, models, requests, cancelAfterMs } = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const camel = (k) => k.replace(/_(.)/g, (_, c) => c.toUpperCase());
const samplers = {}, out = {};
for (const [name, r] of Object.entries(requests)) {
  samplers[r.model] ??= await load(models[r.model], options);
  const req = {};
  for (const [k, v] of Object.entries(r)) {
    if (k === 'model' || k === 'cancel') continue;
    req[camel(k)] = k === 'noise' ? Float32Array.from(v.data) : k === 'labels' && v.dims ? v.data : v;
  }
  let aborted = null;
  if (r.cancel) {
    const c = new AbortController();
    req.signal = c.signal;
    if (r.cancel === 'before') c.abort();
    else setTimeout(() => { aborted = performance.now(); c.abort(); }, cancelAfterMs);
  }
  try {
    const x = await samplers[r.model].sample(req);
    out[name] = { data: Array.from(x.data), dims: x.dims, nfe: x.nfe, nonfinite: [] };
  } catch (e) {
    out[name] = { error: e.name, key: e.key ?? null, message: e.message };
  }
  if (aborted !== null) out[name].stopped_after_s = (performance.now() - aborted) / 1000;
}
console.log(JSON.stringify(out));
"""


def _run_node(backend: Backend, requests: dict[str, dict], tmp: Path) -> dict[str, dict]:
    def arg(v):
        return {"data": np.asarray(v).ravel().tolist(), "dims": list(np.shape(v))} if isinstance(v, np.ndarray) else v
    payload = {"options": backend.options, "models": {k: str(v) for k, v in MODELS.items()}, "cancelAfterMs": 1000 * CANCEL_AFTER_S,
               "requests": {name: {k: arg(v) for k, v in r.items()} for name, r in requests.items()}}
    (tmp / "requests.json").write_text(json.dumps(payload))
    (tmp / "backend.mjs").write_text(NODE_SCRIPT % {"node": json.dumps((JS / "src" / "node.mjs").as_uri())})
    p = subprocess.run(["node", str(tmp / "backend.mjs"), str(tmp / "requests.json")], capture_output=True,
                       text=True, timeout=120, cwd=JS)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for r in out.values():
        if "data" in r:
            r["samples"] = np.array(r.pop("data"), np.float32).reshape(r.pop("dims"))
    return out


def _same(got: np.ndarray, want: np.ndarray, backend: Backend, what: str) -> None:
    assert got.shape == want.shape and got.dtype == np.float32, (what, got.shape, got.dtype)
    if backend.exact:
        assert np.array_equal(got, want, equal_nan=True), f"{what}: max difference {np.nanmax(np.abs(got - want))}"
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL, err_msg=what)


def _refused(r: dict, error: str, key: str | None = None, match: str = "") -> None:
    assert "error" in r, f"expected {error}, got samples"
    assert r["error"] == error and (key is None or r["key"] == key), r
    assert match in r["message"], (match, r["message"])


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_every_backend_keeps_the_sampling_contract(backend, references, tmp_path):
    if backend.js and not HAS_NODE:
        pytest.skip("node or js/node_modules is missing (install node, then `npm ci` in js/)")
    ref = references[backend.baked]
    requests = _requests(backend, ref)
    got = _run_node(backend, requests, tmp_path) if backend.js else _run_python(backend, requests)
    camel = (lambda k: k.split("_")[0] + "".join(w.title() for w in k.split("_")[1:])) if backend.js else str

    # given noise and a seed: the reference's samples, float32 [N, 2], with the solve's evaluations
    for name, want in (("noise", ref.x), ("seeded", ref.seeded)):
        assert "samples" in got[name], got[name]
        _same(got[name]["samples"], want, backend, name)
        assert got[name]["nfe"] == ref.nfe and not got[name]["nonfinite"], got[name]
    assert np.abs(got["other seed"]["samples"] - ref.seeded).max() > 0.1      # the seed is used

    # NaN/Inf: refused where it arose, or (keep_partial) kept with the other rows intact
    step, t = ref.blows_at
    where = f"at step {step} of {ref.steps} (t = {t:.3f})" if backend.sees_steps else backend.noticed
    _refused(got["blowup"], "NumericalError", match=where)
    assert "rows of a tile" in got["blowup"]["message"]
    if backend.js:
        _refused(got["blowup kept"], "UsageError", camel("keep_partial"))
    else:
        kept = got["blowup kept"]
        assert any(where in w for w in kept["nonfinite"]), (where, kept["nonfinite"])
        seen = [int(m) for w in kept["nonfinite"] for m in re.findall(r"at step (\d+) of", w)]
        assert min(seen, default=step) == step, kept["nonfinite"]          # none before the first
        finite = np.isfinite(kept["samples"]).all(1)
        assert np.array_equal(finite, np.isfinite(BLOWUP).all(1) & np.isfinite(ref.blowup).all(1))
        _same(kept["samples"][finite], ref.x[finite], backend, "the rows that stayed finite")

    # a cancel before or during the request
    for name in ("cancelled before", "cancelled during"):
        _refused(got[name], "Interrupted", "signal" if backend.js else None)
        assert got[name]["message"].endswith("cancelled") and (backend.js or got[name]["message"] == "cancelled")
    assert 0 <= got["cancelled during"]["stopped_after_s"] < 1.0, got["cancelled during"]

    # labels and guidance, where the file takes them
    if backend.baked:
        _refused(got["guided"], "UsageError", "labels", "not class-conditional")
        return
    _same(got["guided"]["samples"], ref.guided, backend, "labels with guidance")
    assert np.abs(got["label 0"]["samples"] - got["label 1"]["samples"]).max() > 1e-3      # labels are used
    _refused(got["label out of range"], "UsageError", "labels", "out of range")

    # the shipped model, on its own default solver and steps
    _same(got["shipped"]["samples"], ref.shipped, backend, "the shipped model")
    assert got["shipped"]["nfe"] == ref.shipped_nfe
