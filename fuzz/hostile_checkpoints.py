"""Crafted checkpoints and training states, run through every command that reads one.

    python -m fuzz.hostile_checkpoints [FOLDER] [--json results.json]

Each file is a small real checkpoint (a moons MLP with its training state, written with
--checkpoint-every) with one thing made hostile: files that are not checkpoints, architectures
that lie about their size, weights that do not fit, configs of the wrong type or range, and
training states with garbage in each field --resume reads. Every file goes through `fm-export`,
`fm-train sample` and `fm-train fit --resume`; each run must end with its expected status (3
where the command reads the hostile part, which --resume does for the training state only and
export and sample for the rest; 0 otherwise) in one stderr line, no traceback, nothing left behind, within KILL_AFTER seconds
and taking at most TAKEN_BOUND of memory on top of the process it forked from. Prints a table by
class (files, runs, exit codes, worst memory taken, worst time); exit status 1 if a run failed.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from fuzz.hostile import corpus_main, problems, run_forked

TAKEN_BOUND = 512 << 20
RECIPE = ["--data", "moons", "--width", "16", "--depth", "2", "--batch-size", "32", "--ema", "0.9",
          "--lr-schedule", "constant", "--seed", "0"]


def _payload(base: Path) -> dict:
    import torch
    return torch.load(base, weights_only=True)


def _save(payload, path: Path) -> None:
    import torch
    torch.save(payload, path)


def _cases(base: dict) -> list[tuple[str, str, object]]:
    """(class, name, how to make it): a function of (payload, path) or of path alone."""
    import torch

    def cfg(**change):
        return lambda p, out: _save({**p, "config": {**p["config"], **change}}, out)

    def arch(**change):
        return lambda p, out: _save({**p, "config": {**p["config"], "architecture": {**p["config"]["architecture"],
                                                                                       **change}}}, out)

    def state(**change):
        return lambda p, out: _save({**p, "training_state": {**p["training_state"], **change}}, out)

    def moments(p, out):
        opt = p["training_state"]["optimizer"]
        bad = {k: {**v, "exp_avg": torch.zeros(3, 3)} for k, v in opt["state"].items()}
        _save({**p, "training_state": {**p["training_state"], "optimizer": {**opt, "state": bad}}}, out)

    def zipped(out):
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
            z.writestr("archive/version", "3\n")

    rng = {**base["training_state"]["stream"]}
    return [
        ("control", "untouched", lambda p, out: _save(p, out)),
        ("not a checkpoint", "empty", lambda out: out.write_bytes(b"")),
        ("not a checkpoint", "random bytes", lambda out: out.write_bytes(os.urandom(4096))),
        ("not a checkpoint", "zip, not torch", lambda out: zipped(out)),
        ("not a checkpoint", "a list", lambda out: _save([1, 2, 3], out)),
        ("not a checkpoint", "pickled code", lambda out: out.write_bytes(
            b"cos\nsystem\n(S'echo pwned > pwned.txt'\ntR.")),
        ("lying architecture", "depth 10^7", arch(depth=10 ** 7)),
        ("lying architecture", "width 10^9", arch(width=10 ** 9)),
        ("lying architecture", "width -16", arch(width=-16)),
        ("lying architecture", "width 'wide'", arch(width="wide")),
        ("lying architecture", "unknown type", arch(type="hypernet")),
        ("lying architecture", "data_shape 10^6 x 10^6", cfg(data_shape=[10 ** 6, 10 ** 6])),
        ("lying architecture", "data_shape []", cfg(data_shape=[])),
        ("lying architecture", "num_classes 10^12", arch(num_classes=10 ** 12)),
        ("weights that do not fit", "no state_dict", lambda p, out: _save({k: v for k, v in p.items()
                                                                           if k != "state_dict"}, out)),
        ("weights that do not fit", "a weight reshaped", lambda p, out: _save(
            {**p, "state_dict": {k: v.reshape(-1) for k, v in p["state_dict"].items()}}, out)),
        ("weights that do not fit", "one weight missing", lambda p, out: _save(
            {**p, "state_dict": dict(list(p["state_dict"].items())[1:])}, out)),
        ("weights that do not fit", "strings for weights", lambda p, out: _save(
            {**p, "state_dict": {k: "w" for k in p["state_dict"]}}, out)),
        ("config of the wrong kind", "steps 'many'", cfg(steps="many")),
        ("config of the wrong kind", "path 'ot'", cfg(path="ot")),
        ("config of the wrong kind", "unknown path", cfg(path={"name": "teleport"})),
        ("config of the wrong kind", "unknown prediction", cfg(prediction="future")),
        ("training state", "step -5", state(step=-5)),
        ("training state", "step 'five'", state(step="five")),
        ("training state", "no recipe", state(recipe=None)),
        ("training state", "model weights garbage", state(model={"net.0.weight": torch.zeros(1)})),
        ("training state", "no ema for an ema run", state(ema=None)),
        ("training state", "optimizer garbage", state(optimizer={"state": {}, "param_groups": [{"lr": 1}]})),
        ("training state", "Adam moments misshapen", moments),
        ("training state", "rng of 7 bytes", state(torch_rng=torch.zeros(7, dtype=torch.uint8))),
        ("training state", "stream state garbage", state(stream={**rng, "numpy": {"bit_generator": "PCG64",
                                                                                    "state": {"state": "9" * 5000}}})),
        ("training state", "loss history NaN", state(recent=[float("nan")])),
        ("training state", "world size 0", state(world_size=0)),
    ]


# exit status by command: --resume reads only the training state; export and sample only the rest
_REFUSED = {"export": 3, "sample": 3, "resume": 3}
_WEIGHTS = {"export": 3, "sample": 3, "resume": 0}     # the network and its config
_EXPECT = {"control": {"export": 0, "sample": 0, "resume": 0},
           "training state": {"export": 0, "sample": 0, "resume": 3},
           "not a checkpoint": _REFUSED}


def write_corpus(folder: Path) -> tuple[Path, list[dict]]:
    """The base checkpoint (trained here, a few seconds) and one crafted file per case."""
    folder.mkdir(parents=True, exist_ok=True)
    from training.cli import main as fm_train
    base = folder / "base.ckpt"
    try:
        fm_train(["fit", *RECIPE, "--steps", "40", "--checkpoint-every", "20", "--out", str(base), "--no-progress"])
    except SystemExit as e:
        if e.code:
            raise
    payload, files = _payload(base), []
    for i, (cls, name, make) in enumerate(_cases(payload)):
        path = folder / f"{i:02d}.ckpt"
        make(payload, path) if make.__code__.co_argcount == 2 else make(path)
        expect = _EXPECT.get(cls, _WEIGHTS)
        if cls == "not a checkpoint" and not path.read_bytes().startswith(b"PK"):
            expect = {**expect, "export": 2}    # fm-export tells what it takes before opening the file
        files.append({"class": cls, "name": name, "path": str(path), "expect": expect})
    return base, files


def _fm_train(argv):
    from training.launch import main
    main(argv)


def _fm_export(argv):
    from training.launch import export_main
    export_main(argv)


def argv_for(command: str, ckpt: str, work: Path) -> tuple:
    if command == "export":
        return _fm_export, "fm-export", [ckpt, "--out", str(work / "m.onnx")]
    if command == "sample":
        return _fm_train, "fm-train", ["sample", ckpt, "-n", "4", "--out", str(work / "x.npy")]
    return _fm_train, "fm-train", ["fit", *RECIPE, "--steps", "41", "--resume", ckpt, "--out",
                                   str(work / "r.ckpt"), "--no-progress"]


def run_corpus(folder: Path) -> list[dict]:
    import torch
    torch.set_num_threads(1)        # no thread pool in the parent: forks stay safe
    folder = folder.resolve()
    _, files = write_corpus(folder / "checkpoints")
    import training.cli  # noqa: F401
    import training.export_cli  # noqa: F401  imported once, before the forks
    results = []
    for f in files:
        for command in ("export", "sample", "resume"):
            work = folder / "work"
            work.mkdir(exist_ok=True)
            entry, name, argv = argv_for(command, f["path"], work)
            r = run_forked(argv, folder, entry, name)
            found = problems({**r, "peak": 0}, command, f["expect"], work)
            if r["taken"] > TAKEN_BOUND:
                found.append(f"took {r['taken'] >> 20} MiB")
            if (folder / "pwned.txt").exists():
                found.append("ran code from the file")
            r.update(f, command=command, problems=found, peak=r["taken"])
            for p in work.iterdir():
                p.unlink()
            results.append(r)
    return results


def main() -> None:
    corpus_main(__doc__, run_corpus, {"worst peak MiB": "worst MiB taken"})


if __name__ == "__main__":
    main()
