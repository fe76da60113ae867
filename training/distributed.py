"""Training on several processes with torch.distributed: torchrun starts the processes (and
restarts them after a failure, up to --max-restarts), DistributedDataParallel averages the
gradients, gloo on CPU and nccl on GPUs.

Each process trains on its rows of the global batch (streams.PerStepStream), so the averaged
gradient is the gradient of the global batch's loss, and the optimiser, learning-rate schedule
and EMA take the same step in every process. Process 0 alone writes checkpoints, the loss log
and the progress bar. Minibatch OT pairs the global batch: the processes' noise and data rows
are gathered on process 0, one assignment is solved there, and each process gets the noise
paired with its own data rows back (ot_over_processes).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from fm_runtime.errors import Interrupted, TimedOut, UsageError
from fm_runtime.model import control


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    """This process's rank in the job (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def restart_count() -> int:
    """How many times torchrun has restarted this job's processes (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def run_id() -> str:
    """The job's rendezvous id (torchrun --rdzv-id; a fresh one per job with --standalone)."""
    return os.environ.get("TORCHELASTIC_RUN_ID", "")


@dataclass(frozen=True)
class Group:
    rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The average over processes of each process's `values` (one all-reduce)."""
        values = values.detach().to(self.device, torch.float64)
        if self.world_size > 1:
            dist.all_reduce(values)
        return values.cpu() / self.world_size


@contextmanager
def process_group() -> Iterator[Group | None]:
    """The group this process belongs to when torchrun started it (None otherwise): joins it on
    entry, leaves it on exit if it was joined here. nccl and this process's GPU (LOCAL_RANK)
    when CUDA is available, else gloo on CPU."""
    if not launched():
        yield None
        return
    local = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise UsageError(f"process {local} on this machine has no GPU: {torch.cuda.device_count()} "
                               "visible; start at most that many processes per machine")
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None, **_attempt_store())
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), device, dist.get_backend())
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def _attempt_store(timeout: timedelta = timedelta(minutes=10)) -> dict:
    """A rendezvous store of this attempt's own. torchrun hands every attempt the same store (its
    agent's), where the process group finds the addresses the previous attempt's processes
    published: a restarted process then connects to a dead one and fails (gloo "Connection
    refused", seen with torch 2.13). So process 0 opens a fresh store and publishes its address
    in the agent's; the others connect to it, and an address left by an earlier attempt, which
    refuses connections, is read again until the new one is there. (A prefix per restart count
    would not do: after a failure on one of several machines, torchrun restarts the others
    without counting a restart there.)"""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    rank, world, host = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), os.environ["MASTER_ADDR"]
    agent = dist.TCPStore(host, int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    key = f"fm-train/{run_id()}/store"
    if rank == 0:
        store = dist.TCPStore(host, 0, world, is_master=True, timeout=timeout, wait_for_workers=False)
        agent.set(key, f"{host}:{store.port}")
    else:
        deadline = time.monotonic() + timeout.total_seconds()
        while True:
            address, port = agent.get(key).decode().rsplit(":", 1)
            try:
                socket.create_connection((address, int(port)), timeout=10).close()
                break
            except OSError:             # an earlier attempt's store, gone
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        store = dist.TCPStore(address, int(port), is_master=False, timeout=timeout)
    return {"store": store, "rank": rank, "world_size": world}


def ot_over_processes(pair: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """A coupling (x0, x1) -> x0 reordered that pairs the global batch: every process's rows are
    gathered on process 0 in rank order, `pair` (the one-process coupling) runs once on the
    concatenation, and each process receives the noise rows paired with its data rows. Every
    process must hold the same number of rows. Traffic per step: 2 B D numbers into process 0,
    B D out of it (B the global batch, D the data size)."""
    def couple(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        if world == 1:
            return pair(x0.cpu(), x1.cpu()).to(x0.device)
        rank, rows, shape = dist.get_rank(), len(x0), x0.shape[1:]
        both = torch.cat([x0.reshape(rows, -1), x1.reshape(rows, -1)], 1).contiguous()
        parts = [torch.empty_like(both) for _ in range(world)] if rank == 0 else None
        dist.gather(both, parts, dst=0)
        pieces = None
        if rank == 0:
            every = torch.cat(parts).cpu()
            width = both.shape[1] // 2
            paired = pair(every[:, :width].reshape(-1, *shape), every[:, width:].reshape(-1, *shape))
            pieces = [p.contiguous().to(x0.device) for p in paired.split(rows)]
        out = torch.empty_like(x0)
        dist.scatter(out, pieces, src=0)
        return out
    return couple


def launch(nproc: int, args: list[str], module: str = "training.cli") -> int:
    """Run `python -m <module> <args>` in `nproc` processes on this machine under torchrun
    (--standalone: a private rendezvous on localhost) and return torchrun's exit status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", module, *args]
    job = subprocess.Popen(cmd, start_new_session=True)     # its own group: stopped as one below
    try:
        while job.poll() is None:
            time.sleep(0.05)
            if control.stop_reason() is not None:   # Ctrl-C, SIGTERM or --timeout of this process
                break
    finally:
        if job.poll() is None:
            for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    job.wait(wait)
                    break
    control.poll_stop()
    return job.returncode


def launch_fit(ctx, nproc: int, keeps: str | None) -> int:
    """fm-train fit's own command line in `nproc` processes (its --max-memory for each; its
    --timeout kept here, where it stops the whole job). Stopped, it says what the job left in
    `keeps` (the --checkpoint-every output) when a process wrote it during this run."""
    from fm_runtime.tools import limits
    started = time.time()
    budget = [] if ctx.get_parameter_source("max_memory").name == "DEFAULT" else ["--max-memory", str(limits.budget())]
    try:
        return launch(nproc, ["fit", *explicit_args(ctx, leave_out=("nproc",)), *budget])
    except (TimedOut, Interrupted):
        if keeps and os.path.isfile(keeps) and os.stat(keeps).st_mtime >= started:
            raise control.stop_error(left=f"{keeps} holds the last --checkpoint-every step (continue with "
                                     f"--resume {keeps})") from None
        raise


def explicit_args(ctx, leave_out: tuple[str, ...] = ()) -> list[str]:
    """The options given on this click command line, as arguments again (defaults left out, so
    the processes apply the same defaults)."""
    from click.core import ParameterSource

    args: list[str] = []
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if p.name in leave_out or ctx.get_parameter_source(p.name) in (None, ParameterSource.DEFAULT) \
                or not p.expose_value:          # applied here (--timeout: this process stops the job)
            continue
        if p.is_flag and p.secondary_opts:
            args.append(p.opts[0] if value else p.secondary_opts[0])
        elif p.is_flag:
            args += [p.opts[0]] if value else []
        else:
            args += [max(p.opts, key=len), str(value)]
    return args
