"""Training on several processes (torchrun, DistributedDataParallel on gloo), global OT pairs,
resuming, and a killed process under torchrun --max-restarts."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from training import resume, streams
from training.checkpoint import CheckpointError, load_checkpoint
from training.couplings import ot_pair
from training.sample import sample
from training.train import fit

from .conftest import run_cli

pytestmark = pytest.mark.slow      # torchrun with two processes, restarts: CI runs it with -m slow

# One small run for every comparison here: 2 processes, global batch 128, minibatch OT over the
# global batch, EMA, a checkpoint every 20 steps.
RUN = dict(steps=200, batch_size=128, lr=5e-3, lr_schedule="constant", ema=0.99, width=32, coupling="ot")
RUN_ARGS = ["--data", "moons", "--steps", "200", "--batch-size", "128", "--lr", "5e-3", "--lr-schedule",
            "constant", "--ema", "0.99", "--width", "32", "--coupling", "ot", "--checkpoint-every", "20",
            "--no-progress"]
LOSS_RTOL = 1e-5        # per-step loss, 2 processes against 1 (measured: < 3e-7)
SAMPLE_ATOL = 1e-4      # final models' samples from the same noise (measured: < 1e-6)


def losses(path) -> np.ndarray:
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    assert np.array_equal(table[:, 0], np.arange(1, len(table) + 1))
    return table[:, 1]


def weights(model) -> torch.Tensor:
    return torch.cat([v.flatten() for v in model.state_dict().values()])


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """fm-train fit --nproc 2: the reference two-process run."""
    d = tmp_path_factory.mktemp("ddp")
    p = run_cli("fm-train", "fit", *RUN_ARGS, "--nproc", "2", "--loss-log", str(d / "loss.csv"),
                "--out", str(d / "m.ckpt"), cwd=d)
    return d, p


def _ot_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    from training.distributed import ot_over_processes
    dist.init_process_group("gloo", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(7)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 3
    rows = slice(32 * rank, 32 * (rank + 1))
    np.save(f"{out}/{rank}.npy", ot_over_processes(ot_pair)(x0[rows], x1[rows]).numpy())
    dist.destroy_process_group()


def test_ot_over_two_processes_is_one_assignment_of_the_concatenated_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ot_rank, args=(port, str(tmp_path)), nprocs=2)
    got = np.concatenate([np.load(tmp_path / "0.npy"), np.load(tmp_path / "1.npy")])
    g = torch.Generator().manual_seed(7)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 3
    assert np.array_equal(got, ot_pair(x0, x1).numpy())
    per_rank = torch.cat([ot_pair(x0[:32], x1[:32]), ot_pair(x0[32:], x1[32:])]).numpy()
    assert not np.array_equal(got, per_rank)          # pairing each half alone is something else
    assert sorted(map(tuple, got)) == sorted(map(tuple, x0.numpy()))   # a reordering of the noise


def test_two_processes_follow_one_process_with_the_same_global_batch(two_processes):
    d, p = two_processes
    assert p.stderr.count("trained moons: 200 steps") == 1          # process 0 alone reports
    two, config = load_checkpoint(d / "m.ckpt")
    assert config["processes"] == 2 and config["data_stream"] == "per-step" and config["steps"] == 200
    one, _ = fit("moons", **RUN, seed=0, progress=False, threads=1, stream="per-step", loss_log=d / "one.csv")
    a, b = losses(d / "one.csv"), losses(d / "loss.csv")
    assert len(a) == len(b) == 200 and a[-50:].mean() < 0.6 * a[:50].mean()
    np.testing.assert_allclose(b, a, rtol=LOSS_RTOL)
    z = np.random.default_rng(1).standard_normal((2000, 2)).astype(np.float32)
    np.testing.assert_allclose(sample(two, z, 8, "midpoint"), sample(one, z, 8, "midpoint"), atol=SAMPLE_ATOL)
    other, _ = fit("moons", **{**RUN, "steps": 40}, seed=1, progress=False, stream="per-step")
    assert not torch.allclose(weights(other), weights(one), atol=1e-3)      # another seed is not within it


def _crash_at(step: int):
    """Make the data streams fail when asked for `step`: a run dying mid-way."""
    originals = {c: c.draw for c in (streams.SequentialStream, streams.PerStepStream)}

    def draw(self, s):
        if s == step:
            raise RuntimeError("stopped")
        return originals[type(self)](self, s)
    return originals, draw


@pytest.mark.parametrize("stream", ["sequential", "per-step"])
def test_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path, monkeypatch, stream):
    opts = dict(steps=60, batch_size=64, lr=5e-3, lr_schedule="cosine", ema=0.9, width=16, depth=2,
                conditional=True, coupling="ot", seed=3, progress=False, stream=stream)
    whole, whole_cfg = fit("moons", **opts, loss_log=tmp_path / "whole.csv")
    originals, crash = _crash_at(45)
    for cls in originals:
        monkeypatch.setattr(cls, "draw", crash)
    with pytest.raises(RuntimeError, match="stopped"):
        fit("moons", **opts, out=tmp_path / "run.ckpt", checkpoint_every=20, loss_log=tmp_path / "run.csv")
    monkeypatch.undo()
    _, mid = load_checkpoint(tmp_path / "run.ckpt")          # an ordinary checkpoint of step 40
    assert mid["steps"] == 40 and resume.read(tmp_path / "run.ckpt")["step"] == 40
    resumed, cfg = fit("moons", **opts, out=tmp_path / "done.ckpt", resume=tmp_path / "run.ckpt",
                       loss_log=tmp_path / "run.csv")
    assert torch.equal(weights(resumed), weights(whole))
    assert np.array_equal(losses(tmp_path / "run.csv"), losses(tmp_path / "whole.csv"))
    assert cfg["final_loss"] == whole_cfg["final_loss"]
    fresh, _ = fit("moons", **{**opts, "steps": 20})
    assert not torch.equal(weights(fresh), weights(whole))


def test_resume_extends_a_finished_constant_lr_run(tmp_path):
    opts = dict(batch_size=64, lr=5e-3, lr_schedule="constant", ema=0.9, width=16, depth=2, seed=1, progress=False)
    in_one_go, _ = fit("moons", steps=80, **opts)
    fit("moons", steps=40, **opts, out=tmp_path / "40.ckpt", checkpoint_every=1000)
    extended, cfg = fit("moons", steps=80, **opts, out=tmp_path / "80.ckpt", resume=tmp_path / "40.ckpt")
    assert torch.equal(weights(extended), weights(in_one_go)) and cfg["steps"] == 80
    assert load_checkpoint(tmp_path / "80.ckpt")[1]["steps"] == 80


def test_resume_refuses_what_would_not_continue_the_same_run(tmp_path):
    opts = dict(batch_size=32, width=8, depth=1, ema=0.0, progress=False)
    fit("moons", steps=10, lr_schedule="cosine", **opts, out=tmp_path / "c.ckpt", checkpoint_every=5)
    fit("moons", steps=10, lr_schedule="cosine", **opts, out=tmp_path / "plain.ckpt")
    cases = [(dict(steps=20, lr_schedule="cosine"), "c.ckpt", "cosine learning-rate schedule is fixed"),
             (dict(steps=10, lr_schedule="cosine", lr=1e-3), "c.ckpt", "lr 0.003 .now 0.001"),
             (dict(steps=5, lr_schedule="cosine"), "c.ckpt", "at step 10, past --steps 5"),
             (dict(steps=10, lr_schedule="cosine"), "plain.ckpt", "no training state"),
             (dict(steps=10, lr_schedule="cosine"), "none.ckpt", "not found")]
    for changed, name, words in cases:
        with pytest.raises(CheckpointError, match=words):
            fit("moons", **opts | changed, resume=tmp_path / name)
    # with --nproc the refusal comes before torchrun starts, with this tool's exit status
    p = run_cli("fm-train", "fit", "--steps", "20", "--batch-size", "32", "--width", "8", "--depth", "1",
                "--ema", "0", "--resume", str(tmp_path / "c.ckpt"), "--out", str(tmp_path / "x.ckpt"),
                "--nproc", "2", check=False)
    assert p.returncode == 3 and "cosine learning-rate schedule is fixed" in p.stderr and "OMP_NUM_THREADS" not in p.stderr
    p = run_cli("fm-train", "fit", "--batch-size", "33", "--nproc", "2", "--out", str(tmp_path / "x.ckpt"), check=False)
    assert p.returncode == 2 and "multiple of --nproc 2" in p.stderr


def _workers(parent: int) -> dict[int, int]:
    """rank -> pid of the processes torchrun started."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1]) == parent:
                env = dict(v.split("=", 1) for v in open(f"/proc/{entry}/environ").read().split("\0") if "=" in v)
                if "RANK" in env:
                    found[int(env["RANK"])] = int(entry)
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers in /proc")
def test_a_killed_process_is_restarted_and_the_run_finishes_as_if_never_stopped(tmp_path, two_processes):
    import fm_runtime
    from training.export_checkpoint import export_checkpoint

    out = tmp_path / "m.ckpt"
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "--max-restarts", "1", "-m", "training.cli", "fit", *RUN_ARGS,
                            "--loss-log", str(tmp_path / "loss.csv"), "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline, killed = time.time() + 120, None
    while killed is None and time.time() < deadline and job.poll() is None:
        if out.exists():                       # the first checkpoint is written: kill process 1
            killed = _workers(job.pid).get(1)
            if killed:
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    _, err = job.communicate(timeout=180)
    assert killed is not None, err
    assert job.returncode == 0, err
    assert "restart 1: resuming from" in err and err.count("trained moons: 200 steps") == 1
    model, config = load_checkpoint(out)
    assert config["steps"] == 200
    reference, _ = load_checkpoint(two_processes[0] / "m.ckpt")
    assert torch.equal(weights(model), weights(reference))
    assert np.array_equal(losses(tmp_path / "loss.csv"), losses(two_processes[0] / "loss.csv"))
    export_checkpoint(out, tmp_path / "m.onnx")
    x = fm_runtime.load(str(tmp_path / "m.onnx")).sample(500, seed=0)
    assert x.shape == (500, 2) and np.isfinite(x).all()
