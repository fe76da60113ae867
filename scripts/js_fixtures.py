"""Fixtures for the JavaScript sampler's tests (js/test): model files exported here, noise, and the
Python runtime's samples from that noise for every solver and steps in {1, 4, 8}, on time schedules
(a file's non-uniform default and per-request ones), plus broken files and bad requests with the
error class the Python runtime gives each. Written to OUTDIR as
manifest.json and little-endian float32 .bin files.

    python scripts/js_fixtures.py OUTDIR
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

SOLVERS = ("euler", "midpoint", "heun", "rk4")
STEPS = (1, 4, 8)
ROWS = 64
SCHEDULE_SOLVERS = ("midpoint", "rk4")
SCHEDULES = ("shift:3", "sway:-1", "cosine")
TIMES = "times:0,0.1,0.35,0.7,1"          # an explicit grid fixes the steps (4)
FILE_SCHEDULE = "shift:3"                  # the "sched" model's fm.default_schedule


def build_models(out: Path) -> dict[str, Path]:
    """A plain and a conditional moons model (briefly trained: parity needs no quality), a baked
    sampler of the plain one, the same plain graph without metadata, the plain model with a
    non-uniform default schedule, and the shipped model."""
    import onnx

    from fm_runtime.model.session import default_model_path
    from training.checkpoint import save_checkpoint
    from training.export_checkpoint import export_checkpoint, export_model
    from training.train import fit

    quick = dict(steps=200, batch_size=256, lr=5e-3, lr_schedule="constant", ema=0.0, activation="elu", progress=False)
    model, config = fit("moons", seed=0, **quick)
    save_checkpoint(out / "plain.ckpt", model, config)
    export_model(model, config, out / "plain.onnx")
    export_checkpoint(out / "plain.ckpt", out / "baked.onnx", bake="heun:4")
    export_checkpoint(out / "plain.ckpt", out / "sched.onnx", default_schedule=FILE_SCHEDULE)
    model, config = fit("moons", seed=1, conditional=True, **quick)
    export_model(model, config, out / "cond.onnx")
    bare = onnx.load(out / "plain.onnx")
    del bare.metadata_props[:]
    onnx.save(bare, out / "nometa.onnx")
    return {"plain": out / "plain.onnx", "cond": out / "cond.onnx", "baked": out / "baked.onnx",
            "nometa": out / "nometa.onnx", "sched": out / "sched.onnx", "shipped": default_model_path()}


def _save(out: Path, name: str, a: np.ndarray) -> str:
    np.ascontiguousarray(a, "<f4").tofile(out / name)
    return name


def _cases(name: str, kind: str, num_classes: int):
    if kind == "baked":
        yield None, None, {}
        return
    if name == "sched":        # the file's defaults: its solver, steps and schedule
        yield None, None, {}
        for solver in SCHEDULE_SOLVERS:
            for steps in STEPS:
                yield solver, steps, {}
        return
    if name == "plain":        # per-request schedules; explicit times as text and as a list
        for solver in SCHEDULE_SOLVERS:
            for schedule in SCHEDULES:
                for steps in STEPS:
                    yield solver, steps, {"schedule": schedule}
            yield solver, None, {"schedule": TIMES}
        yield "heun", 4, {"schedule": [float(t) for t in TIMES[6:].split(",")]}
    for solver in SOLVERS:
        for steps in STEPS:
            yield solver, steps, {}
            if num_classes:
                yield solver, steps, {"labels": "rows", "guidance": 2.0}
                yield solver, steps, {"labels": 1}


def parity_cases(out: Path, models: dict[str, Path]) -> list[dict]:
    import fm_runtime

    cases = []
    for name, path in models.items():
        s = fm_runtime.load(path)
        noise = np.random.default_rng(len(cases)).standard_normal((ROWS, *s.data_shape), dtype=np.float32)
        noise_file = _save(out, f"{name}-noise.bin", noise)
        for solver, steps, cond in _cases(name, s.spec.kind, s.num_classes):
            labels = cond.get("labels")
            if labels == "rows":
                labels = [i % s.num_classes for i in range(ROWS)]
            x = s.sample(noise=noise, steps=steps, solver=solver, labels=labels, guidance=cond.get("guidance", 1.0),
                         schedule=cond.get("schedule"))
            tag = f"{name}-{solver or 'default'}-{steps or 0}-{len(cases)}"
            cases.append({"model": str(path), "name": name, "noise": noise_file, "steps": steps, "solver": solver,
                          "schedule": cond.get("schedule"), "labels": labels, "guidance": cond.get("guidance", 1.0), "rows": ROWS,
                          "data_shape": list(s.data_shape), "expected": _save(out, f"{tag}.bin", x)})
    return cases


def broken_files(out: Path, models: dict[str, Path]) -> list[dict]:
    """Files the Python loader refuses, with its error class and message."""
    import onnx

    from fm_runtime import FmError, load

    good, baked = models["plain"].read_bytes(), models["baked"].read_bytes()
    files = {"empty.onnx": b"", "text.onnx": b"hello, not a model\n", "truncated.onnx": good[: len(good) // 2],
             "zip.onnx": b"PK\x03\x04" + bytes(200)}

    def edited(name: str, edit, base: bytes = good) -> None:
        m = onnx.load_from_string(base)
        edit(m)
        files[name] = m.SerializeToString()

    def scale_weights(m):
        w = m.graph.initializer[0]
        arr = onnx.numpy_helper.to_array(w) * 1.5
        w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))

    def set_key(key, value):
        def edit(m):
            for p in m.metadata_props:
                if p.key == key:
                    p.value = value
                    return
            m.metadata_props.add(key=key, value=value)
        return edit

    def drop_key(key):
        def edit(m):
            keep = [(p.key, p.value) for p in m.metadata_props if p.key != key]
            del m.metadata_props[:]
            for k, v in keep:
                m.metadata_props.add(key=k, value=v)
        return edit

    edited("altered-weights.onnx", scale_weights)
    edited("newer-version.onnx", set_key("fm.format_version", "99"))
    edited("unknown-kind.onnx", set_key("fm.kind", '"sde"'))
    edited("no-data-shape.onnx", drop_key("fm.data_shape"))
    edited("wrong-data-shape.onnx", set_key("fm.data_shape", "[3]"))
    edited("float-steps.onnx", set_key("fm.default_steps", "2.5"))
    edited("bad-json.onnx", set_key("fm.path", "{not json"))
    edited("bad-solver.onnx", set_key("fm.default_solver", '"rk5"'))
    edited("bad-selftest.onnx", set_key("fm.selftest", '{"inputs": 3}'))
    # hostile metadata: valid JSON of the wrong shape, sizes and nesting no model needs
    edited("deep-training.onnx", set_key("fm.training", '{"notes": ' + "[" * 40 + "]" * 40 + "}"))
    edited("deeper-than-the-parser.onnx", set_key("fm.training", "[" * 100_000 + "]" * 100_000))
    edited("big-training.onnx", set_key("fm.training", json.dumps({"notes": "x" * (2 << 20)})))
    edited("huge-int-producer.onnx", set_key("fm.producer", '{"build": ' + "9" * 5000 + "}"))
    edited("huge-data-shape.onnx", set_key("fm.data_shape", "[100000, 100000]"))
    edited("baked-no-steps.onnx", set_key("fm.baked", '{"solver": "heun"}'), baked)
    edited("baked-wrong-nfe.onnx", set_key("fm.baked", '{"solver": "heun", "steps": 4, "nfe": 9}'), baked)
    edited("variant-text-size.onnx", set_key("fm.variant", json.dumps(
        {"precision": "fp16", "vs_fp32": {"size_bytes": "12 KiB", "max_dev": 0.1, "mean_dev": 0.01}})))
    edited("selftest-unknown-inputs.onnx", set_key("fm.selftest", json.dumps(
        {"inputs": {"q": [[0.5, 0.5]], "t": [0.5]}, "output": [[0.0, 0.0]]})))
    edited("divergence-numbers.onnx", set_key("fm.divergence", '{"unsupported_ops": [1, 2]}'))
    edited("value-range-nan.onnx", set_key("fm.value_range", "[NaN, 1.0]"))
    edited("value-range-reversed.onnx", set_key("fm.value_range", "[1e16, 1e-05]"))
    edited("integral-float-steps.onnx", set_key("fm.default_steps", "2.0"))
    # time schedules (contract version 3): refused by name, by type, and an explicit grid whose
    # steps disagree with the file's
    edited("unknown-schedule.onnx", set_key("fm.default_schedule", '"warp:2"'))
    edited("schedule-number.onnx", set_key("fm.default_schedule", "3"))
    edited("schedule-bad-sway.onnx", set_key("fm.default_schedule", '"sway:2"'))
    edited("schedule-steps-mismatch.onnx", lambda m: [set_key("fm.format_version", "3")(m),
                                                      set_key("fm.default_steps", "8")(m),
                                                      set_key("fm.default_schedule", '"times:0,0.5,1"')(m)])
    edited("baked-schedule-steps.onnx", set_key("fm.default_schedule", '"times:0,0.3,0.6,1"'), baked)
    edited("text-in-escapes.onnx", set_key("fm.path", r'{"name": ["caf\u00e9\n\ud83d\ude00", {"2": 1, "b": 2.50}]}'))
    # The error text of Python's own JSON reader ("Expecting ...", the integer digit limit) differs
    # between Python versions; for these files only the class and "FILE: metadata fm.KEY" must match.
    prefix_only = {"bad-json.onnx", "huge-int-producer.onnx"}
    cases = []
    for name, data in files.items():
        (out / name).write_bytes(data)
        try:
            load(out / name)
        except FmError as e:
            cases.append({"file": name, "error": type(e).__name__, "message": str(e)})
            if name in prefix_only:
                cases[-1]["prefix"] = re.match(r".*?: metadata fm\.\w+ ", str(e)).group(0)
        else:
            raise AssertionError(f"the Python runtime loads {name}")
    return cases


def bad_requests(models: dict[str, Path]) -> list[dict]:
    """Requests the Python runtime refuses, as {model, options, error}; noise given as rows + flags."""
    from fm_runtime import FmError, load

    requests = [
        ("plain", {"n": 0}), ("plain", {"n": 4, "steps": 0}), ("plain", {"n": 4, "solver": "rk5"}),
        ("plain", {"n": 4, "steps": 2.5}), ("plain", {"n": 4, "labels": 1}), ("plain", {"n": 4, "guidance": 2.0}),
        ("cond", {"n": 4, "labels": 3, "guidance": 2.0}), ("cond", {"n": 4, "labels": -1}),
        ("cond", {"n": 4, "labels": [0, 1]}), ("cond", {"n": 4, "labels": 0, "guidance": 1e4}),
        ("plain", {"noise_rows": 3, "noise_nan": True}), ("plain", {"noise_rows": 3, "n": 4}),
        ("baked", {"n": 4, "steps": 8}), ("baked", {"n": 4, "solver": "euler"}),
        ("plain", {"n": 4, "schedule": "warp"}), ("plain", {"n": 4, "schedule": "shift:0"}),
        ("plain", {"n": 4, "schedule": "sway:2"}), ("plain", {"n": 4, "schedule": "cosine:1"}),
        ("plain", {"n": 4, "schedule": "times:0,0.5,0.4,1"}), ("plain", {"n": 4, "schedule": "times:0,x,1"}),
        ("plain", {"n": 4, "schedule": [0, 0.5, 2]}), ("plain", {"n": 4, "schedule": TIMES, "steps": 8}),
        ("baked", {"n": 4, "schedule": "cosine"}), ("baked", {"n": 4, "schedule": "warp"}),
    ]
    out = []
    for model, options in requests:
        sampler = load(models[model])
        kwargs = {k: v for k, v in options.items() if not k.startswith("noise_")}
        if "noise_rows" in options:
            noise = np.zeros((options["noise_rows"], *sampler.data_shape), np.float32)
            if options.get("noise_nan"):
                noise[1, 0] = np.nan
            kwargs["noise"] = noise
        try:
            sampler.sample(**kwargs)
        except FmError as e:
            out.append({"model": str(models[model]), "options": options, "error": type(e).__name__, "message": str(e)})
        else:
            raise AssertionError(f"the Python runtime accepts {model} {options}")
    return out


def write_fixtures(out: Path, models: dict[str, Path] | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    models = models or build_models(out)
    manifest = {"parity": parity_cases(out, models), "broken": broken_files(out, models),
                "requests": bad_requests(models), "models": {k: str(v) for k, v in models.items()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, allow_nan=False))
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    m = write_fixtures(Path(sys.argv[1]))
    print(f"{len(m['parity'])} parity cases, {len(m['broken'])} broken files, {len(m['requests'])} bad requests "
          f"in {sys.argv[1]}")
