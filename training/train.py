"""The training loop and checkpoints."""
from __future__ import annotations

import functools
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fm_runtime.errors import FmError, NumericalError, ResourceError, UsageError
from fm_runtime.model import control
from fm_runtime.tools import limits

from . import distributed
from . import resume as resume_state
from .checkpoint import inner_network, save_checkpoint
from .couplings import couple as pair_by
from .data import DATASETS, NUM_CLASSES, VALUE_RANGE, sample_data
from .nets import VelocityConv, VelocityDiT, VelocityMLP, VelocityUNet
from .paths import PredictionToVelocity, build_path, cfm_loss
from .progress import progress_bar
from .recipe import Recipe
from .streams import STREAMS, PerStepStream, SequentialStream

# The default recipe was chosen by measurement on moons (benchmarks/bench_recipes.py); see recipe.py.


def fit(dataset: str = "moons", recipe: Recipe | None = None, *, progress: bool | None = None,
        threads: int | None = None, out: str | Path | None = None, checkpoint_every: int = 0,
        resume: str | Path | None = None, loss_log: str | Path | None = None, stream: str | None = None,
        **options) -> tuple[torch.nn.Module, dict]:
    """Train a velocity network on `dataset` with the conditional flow-matching loss (Adam) by
    `recipe` (training.recipe.Recipe; keyword options override its fields, e.g. steps=500):
    a probability path (paths.PATHS; sigma_min applies to "ot") with independent or
    minibatch-OT coupling. lr_schedule "cosine" decays the learning rate to 0 over the run;
    ema > 0 keeps an exponential moving average of the weights (decay `ema`) and returns it;
    grad_clip > 0 clips the gradient norm; time_sampling "logit-normal" draws t = sigmoid(N(0, 1))
    instead of U[0, 1). prediction "x1" or "noise" trains the network to predict data or noise;
    the returned model converts to velocity (PredictionToVelocity). conditional=True trains on the
    dataset's class labels (data.NUM_CLASSES), replacing each label by the "no label" id with
    probability `label_dropout`, so one network is both conditional and unconditional
    (classifier-free guidance). Deterministic for a given seed. The checkpoint config keeps the
    recipe (config["recipe"]). threads: torch intra-op threads for the run (None: leave torch's
    setting; fm-train fit uses 1, which measured fastest for these small networks).

    In processes started by torchrun, fit trains with DistributedDataParallel (training.distributed):
    `batch_size` is the global batch, split evenly, and process 0 alone writes files. out: write
    the final checkpoint there; checkpoint_every K > 0: also every K steps, each with the training
    state (training.resume), and a process restarted by torchrun continues from it. resume: a
    checkpoint with training state to continue from. loss_log: a CSV of the global loss per step.
    stream: the data stream (training.streams): "sequential" (the default in one process) or
    "per-step" (always with several processes; in one process it reproduces their data)."""
    recipe = (replace(recipe or Recipe(), **options) if options else (recipe or Recipe())).validate()
    r = recipe
    prob_path = build_path({"name": r.path, "sigma_min": r.sigma_min} if r.path == "ot" else {"name": r.path})
    num_classes = _check_arguments(dataset, r, checkpoint_every, stream)
    if threads is not None:
        torch.set_num_threads(int(threads))
    data_shape = _data_shape(dataset, r.net)
    with distributed.process_group() as group:
        rank, world = (group.rank, group.world_size) if group else (0, 1)
        device, main = group.device if group else torch.device("cpu"), rank == 0
        state = _resume_state(group, out, resume, recipe)
        kind = _stream_kind(state, stream, group, world)
        draws = (dataset, r.batch_size, num_classes, r.label_dropout, r.time_sampling, prob_path.t_max)
        data = PerStepStream(r.seed, rank, world, *draws) if kind == "per-step" else SequentialStream(r.seed, *draws)
        torch.manual_seed(r.seed)
        model = _build_network(r.net, data_shape, r.width, r.depth, r.activation, num_classes).to(device)
        opt, sched, averaged = _optimiser(model, r)
        first, recent, seconds = 0, [], 0.0
        if state is not None:
            resume_state.restore(state, model, averaged, opt, sched, data)
            first, recent, seconds = state["step"], list(state["recent"]), state["seconds"]
        trainee = group.wrap(model) if group else model
        # under torchrun the named coupling pairs the whole global batch, as one process would
        couple = (distributed.ot_over_processes(functools.partial(pair_by, r.coupling))
                  if group and r.coupling != "independent" else r.coupling)

        def loss_at(step: int) -> torch.Tensor:
            b = data.draw(step)
            x1, y, x0, t = (v if v is None else v.to(device) for v in (b.x1, b.y, b.x0, b.t))
            return cfm_loss(trainee, prob_path, x1, None, couple, r.time_sampling, r.prediction, y, x0=x0, t=t)

        def save(done: int, with_state: bool) -> dict:
            losses.flush()
            config = _config(model, prob_path, recipe, dataset, data_shape, num_classes, done, round(losses.mean(), 6),
                             round(seconds + time.perf_counter() - start, 2),
                             {} if kind == "sequential" else {"data_stream": kind, "processes": world})
            if main and out is not None:
                kept = resume_state.capture(done, model, averaged, opt, sched, data, recent, config["train_seconds"],
                                            recipe.to_dict(), world, distributed.run_id()) if with_state else None
                save_checkpoint(out, averaged.module if averaged is not None else model, config, kept)
            return config

        start = time.perf_counter()
        bar = progress_bar(r.steps, progress if main else False, first)
        losses = _Losses(group, resume_state.LossLog(loss_log, first) if loss_log and main else None, recent, bar)
        saved = None                # the step of the last checkpoint with training state written
        for step in range(first, r.steps):
            if _stop_requested(group):
                raise _stopped(step, r.steps, out if main else None, saved)
            loss = loss_at(step)
            _update(model, loss, opt, sched, averaged, r.grad_clip)
            flush = step % 50 == 0 or step == r.steps - 1
            losses.record(loss, flush=flush)
            if flush:
                _check_finite(losses.recent[-1], step + 1)
            if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < r.steps:
                _checkpoint(save, step + 1, r.steps, out if main else None, saved)
                saved = step + 1
        if bar is not None:
            bar.close()
        config = save(r.steps, bool(checkpoint_every))
        losses.close()
    return _trained_model(model, averaged, prob_path, r.prediction), config


def _check_finite(loss: float, step: int) -> None:
    """Stop (NumericalError, exit 5; nothing written) once the loss is NaN or infinite: weights that
    turn so make the next loss so, and save_checkpoint refuses any that would be written."""
    if not math.isfinite(loss):
        raise NumericalError(f"training stopped at step {step}: the loss is NaN or infinite; nothing written (try a "
                             "lower --lr, --grad-clip, or --ema 0)")


def _check_arguments(dataset: str, r: Recipe, checkpoint_every: int, stream: str | None) -> int:
    """The arguments' errors before anything runs; returns the number of classes trained on (0: unconditional)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    num_classes = NUM_CLASSES.get(dataset, 0) if r.conditional else 0
    if r.conditional and not num_classes:
        raise ValueError(f"dataset {dataset!r} has no class labels; conditional training needs one of: "
                         f"{', '.join(NUM_CLASSES)}")
    if stream not in (None, *STREAMS):
        raise ValueError(f"unknown stream {stream!r}; choose one of: {', '.join(STREAMS)}")
    return num_classes


def _data_shape(dataset: str, net: str) -> tuple[int, ...]:
    """The shape of one example of `dataset`, checked against the network: the image networks need [C, H, W]."""
    data_shape = sample_data(dataset, 2, np.random.default_rng(0)).shape[1:]
    if net in ("conv", "unet", "dit") and len(data_shape) != 3:
        raise ValueError(f"--net {net} is for images [C, H, W]; {dataset} has data shape {list(data_shape)}")
    return data_shape


def _resume_state(group, out, resume, recipe: Recipe) -> dict | None:
    """The training state to continue from, checked against the recipe: under torchrun a restarted
    process's own last checkpoint at `out`, else the `resume` checkpoint; None for a fresh run."""
    state, source = (resume_state.restarted(out), out) if group else (None, None)
    if state is None and resume:
        state, source = resume_state.read(resume), resume
    if state is not None:
        resume_state.check_compatible(state, recipe.to_dict(), str(source))
    return state


def _stream_kind(state: dict | None, stream: str | None, group, world: int) -> str:
    """The data stream: the resumed run's, else the one asked for, else per-step under torchrun and sequential alone."""
    kind = state["stream"]["kind"] if state else stream or ("per-step" if group else "sequential")
    if kind == "sequential" and world > 1:
        raise UsageError("the sequential data stream is for one process; several train on the per-step stream")
    return kind


def _optimiser(model: torch.nn.Module, r: Recipe):
    """Adam, the learning-rate schedule (None: constant) and the moving average of the weights (None without ema)."""
    opt = torch.optim.Adam(model.parameters(), lr=r.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, r.steps) if r.lr_schedule == "cosine" else None
    averaged = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(r.ema)) if r.ema else None
    return opt, sched, averaged


def _update(model: torch.nn.Module, loss: torch.Tensor, opt, sched, averaged, grad_clip: float) -> None:
    """One optimiser step on `loss`: gradients (clipped to norm `grad_clip` when > 0), Adam, the
    schedule and the moving average."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    if sched is not None:
        sched.step()
    if averaged is not None:
        averaged.update_parameters(model)


class _Losses:
    """The loss of each step, kept as tensors until a flush takes the global loss of the steps since
    the last one (one all-reduce), writes it to the loss log and keeps the last 100 values (`recent`),
    whose mean the progress bar shows and the checkpoint config records."""

    def __init__(self, group, log, recent: list[float], bar):
        self.group, self.log, self.recent, self.bar = group, log, recent, bar
        self.pending: list[torch.Tensor] = []

    def record(self, loss: torch.Tensor, flush: bool) -> None:
        self.pending.append(loss.detach())
        if self.bar is not None:
            self.bar.update(1)
        if flush:
            self.flush()
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self.mean():.4f}")

    def flush(self) -> None:
        if self.pending:
            values = (self.group.mean(torch.stack(self.pending)) if self.group else torch.stack(self.pending)).tolist()
            if self.log is not None:
                self.log.write(values)
            self.recent.extend(values)
            del self.recent[:-100], self.pending[:]

    def mean(self) -> float:
        return sum(self.recent) / len(self.recent)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _checkpoint(save, done: int, steps: int, out, saved: int | None) -> None:
    """The checkpoint every --checkpoint-every steps, with the training state; a stop while it is
    written ends the run and leaves the checkpoint before."""
    try:
        save(done, True)
    except FmError:
        if control.stop_reason() is None:
            raise
        raise _stopped(done, steps, out, saved) from None


def _trained_model(model: torch.nn.Module, averaged, prob_path, prediction: str) -> torch.nn.Module:
    """The model fit returns: on the CPU, the moving average's weights when kept, and a velocity
    network whatever the prediction trained."""
    if averaged is not None:
        model.load_state_dict(averaged.module.state_dict())
    model = model.cpu().eval()
    if prediction != "velocity":
        model = PredictionToVelocity(model, prob_path, prediction).eval()
    return model


def _stop_requested(group) -> bool:
    """Ctrl-C, SIGTERM or --timeout (fm-train is supervised). With several processes, any one's
    stops all of them at the same step: one process leaving alone would leave the others in the
    step's gradient all-reduce, which gloo ends with a connection error (an internal error line
    where the job should say what it left)."""
    stop = control.stop_reason() is not None
    if group is None or group.world_size == 1:
        return stop
    return bool(group.mean(torch.tensor([float(stop)])).item() > 0)


def _stopped(step: int, steps: int, out, saved: int | None) -> Exception:
    """The stop error of a run ended at `step`, saying what it leaves: the checkpoint of the last
    --checkpoint-every step (complete, resumable), or nothing."""
    left = f"{out} holds step {saved} (continue with --resume {out})" if saved and out else "nothing written"
    return control.stop_error(f" at step {step} of {steps}", left)


def _build_network(net, data_shape, width, depth, activation, num_classes) -> torch.nn.Module:
    """The network, once its size is known to fit the memory budget (it is first built on torch's
    meta device, which allocates nothing)."""
    with torch.device("meta"):
        params = sum(p.numel() for p in _network(net, data_shape, width, depth, activation, num_classes).parameters())
    need = 5 * 4 * params          # float32 weights, gradients, Adam's two moments and the EMA copy
    if need > limits.budget():
        raise ResourceError(f"a {net} of width {width} and depth {depth} has {params:,} parameters: about "
                            f"{limits.describe(need)} with its gradients, optimiser state and EMA, more than the "
                            f"{limits.describe(limits.budget())} budget (--max-memory); nothing trained")
    return _network(net, data_shape, width, depth, activation, num_classes)


def _network(net, data_shape, width, depth, activation, num_classes) -> torch.nn.Module:
    if net == "conv":
        return VelocityConv(data_shape, width, depth, activation, num_classes)
    if net == "unet":
        return VelocityUNet(data_shape, width, num_classes)
    if net == "dit":
        return VelocityDiT(data_shape, width, depth, num_classes=num_classes)
    if net == "mlp":
        return VelocityMLP(math.prod(data_shape), width, depth, activation, num_classes, data_shape)
    raise ValueError(f"unknown network {net!r}; choose mlp, conv, unet or dit")


def _config(model, prob_path, recipe: Recipe, dataset, data_shape, num_classes, steps, final_loss, seconds,
            extra: dict) -> dict:
    r = recipe
    return {
        "architecture": inner_network(model).config,
        "path": prob_path.config(),
        "coupling": r.coupling,
        "prediction": r.prediction,
        "dataset": dataset,
        "data_shape": [int(s) for s in data_shape],
        "steps": steps,
        "batch_size": r.batch_size,
        "lr": r.lr,
        "optimizer": "adam",
        "lr_schedule": r.lr_schedule,
        "ema": r.ema,
        "grad_clip": r.grad_clip,
        "time_sampling": r.time_sampling,
        "seed": r.seed,
        **({"num_classes": num_classes, "label_dropout": r.label_dropout} if num_classes else {}),
        **({"value_range": VALUE_RANGE[dataset]} if dataset in VALUE_RANGE else {}),
        "recipe": r.to_dict(),
        "final_loss": final_loss,
        "train_seconds": seconds,
        "torch_version": str(torch.__version__),
        **extra,
    }
