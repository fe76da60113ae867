"""Scoring a task's model file with its task metric, sampled by fm_runtime from the .onnx file as a
deployment would (numpy + onnxruntime), on requests drawn from a seed the training never used; a
checkpoint (.ckpt) is sampled in torch (tasks/native.py), a flow map by its jumps."""
from __future__ import annotations

import time

import numpy as np

from . import digits_text, reach, tts
from .native import open_sampler

HELD_OUT_SEED = 20_261_202       # the requests of every score; training draws from its own seed


def _timed(f, *args, **kwargs):
    """(f's result, seconds it took)."""
    clock = time.perf_counter()
    out = f(*args, **kwargs)
    return out, time.perf_counter() - clock


def score_reach(path: str, n: int = 1000, plot: str | None = None, baseline: bool = False, seed: int = 0) -> dict:
    """Success and left share at 1, 2, 4 and 10 NFE (Euler; a flow map: 1, 2 and 4 jumps) over n
    held-out observations; with `baseline`, the same for an MSE regression net of the same size
    trained as long."""
    s = open_sampler(path)
    obs = reach.observations(n, np.random.default_rng(HELD_OUT_SEED))
    out = {"n": n, "flow": {}}
    nfes, solver = ((1, 2, 4), "jump") if _is_map(s) else ((1, 2, 4, 10), "euler")
    for nfe in nfes:
        x, took = _timed(s.sample, cond={"obs": obs}, steps=nfe, solver=solver, seed=seed)
        out["flow"][nfe] = {**reach.metrics(x, obs), "samples_per_s": n / took}
    if baseline:
        import torch
        # one thread, as fm-train fit trains by default: on a busy machine a second one mostly spins
        torch.set_num_threads(1)
        train, arch = s.spec.training, s.spec.architecture
        net = reach.fit_regression(int(train.get("steps", 4000)), int(train.get("batch_size", 512)),
                                   float(train.get("lr", 2e-3)), int(arch["width"]), int(arch["depth"]))
        with torch.no_grad():
            out["regression"] = reach.metrics(net(torch.from_numpy(obs)).numpy(), obs)
    if plot:
        one = obs[:1]
        paths = s.sample(cond={"obs": np.repeat(one, 32, 0)}, steps=nfes[-1], solver=solver, seed=seed)
        m = reach.metrics(paths, np.repeat(one, 32, 0))
        how = f"{nfes[-1]} jumps" if _is_map(s) else "10 Euler steps"
        reach.plot(plot, one[0], paths, f"32 sampled paths, {how}: {m['success']:.0%} clear, "
                                         f"{m['left']:.0%} pass left")
    return out


def _is_map(s) -> bool:
    """Whether a sampler (a checkpoint's or a model file's) is a flow map."""
    return bool(getattr(s, "flow_map", False) or getattr(s.spec, "flow_map", False))


def score_tts(path: str, n: int = 200, plot: str | None = None, seed: int = 0, steps: int | None = None) -> dict:
    """Token and speaker accuracy, frame error and the largest padding value at guidance 1 and 2,
    for requests of L = 2, 8 and 16 tokens (T = 8, 32, 64 frames), from one loaded file."""
    s = open_sampler(path)
    rng = np.random.default_rng(HELD_OUT_SEED)
    out = {"n": n, "by_length": {}}
    how = {"steps": steps} if steps else {}          # None: the file's default (a flow map: one jump)
    for length in (2, 8, 16):
        req = tts.requests(n, rng, length)
        row = {"T": 4 * length}
        for w in (1.0, 2.0):
            mel, took = _timed(s.sample, cond=req, guidance=w, seed=seed, **how)
            row[f"guidance {w:g}"] = {**tts.scores(mel, req["tokens"], req["speaker"]), "samples_per_s": n / took}
        out["by_length"][length] = row
    if plot:
        req = tts.requests(3, np.random.default_rng(HELD_OUT_SEED + 1), 12)
        req["tokens"][:, -1] = 0
        mel = s.sample(cond=req, guidance=2.0, seed=seed)
        tts.plot(plot, mel, tts.clean(req["tokens"], req["speaker"]), "toy TTS, guidance 2: generated | template")
    return out


def score_digits_text(path: str, n: int = 50, plot: str | None = None, seed: int = 0,
                      steps: int | None = None) -> dict:
    """For each prompt (the ten number words, capitalised words and numerals), the share of n
    generated digits a classifier trained on real digits reads as the asked digit, at guidance 1
    and 3; `plot`: a PNG grid with one row per number word (guidance 3)."""
    s = open_sampler(path)
    clf = digits_text.classifier()
    how = {"steps": steps} if steps else {}          # None: the file's default (a flow map: one jump)
    out = {"n": n, "by_prompt": {}, "guidance": {}}
    for w in (1.0, 3.0):
        hits, took_all = [], 0.0
        for d in range(10):
            for text in digits_text.prompts(d):
                x, took = _timed(s.sample, n, cond={"text": digits_text.encode([text])[0]}, guidance=w, seed=seed,
                                  **how)
                took_all += took
                rate = float((clf.predict(digits_text.unit_to_pixels(x).reshape(n, -1)) == d).mean())
                out["by_prompt"].setdefault(text, {})[f"guidance {w:g}"] = rate
                hits.append(rate)
        out["guidance"][w] = {"hit_rate": float(np.mean(hits)), "worst": float(np.min(hits)),
                              "samples_per_s": 30 * n / took_all}
    if plot:
        from fm_runtime.tools.png import image_grid, write_png
        rows = [s.sample(10, cond={"text": digits_text.encode([word])[0]}, guidance=3.0, seed=seed)
                for word in digits_text.WORDS]
        write_png(plot, image_grid(np.concatenate(rows), 10, s.spec.value_range))
    return out


SCORES = {"reach": score_reach, "tts": score_tts, "digits-text": score_digits_text}


def score(path: str, **options) -> dict:
    """The task's score of a model file or checkpoint; a flow map of tts or digits-text is scored
    at 1, 2 and 4 jumps ({"jumps": {k: score}}; reach's own table has them)."""
    s = open_sampler(path)
    task = s.spec.training.get("dataset")
    if _is_map(s) and task != "reach":
        return {"jumps": {k: SCORES[task](path, steps=k, **{**options, "plot": options.get("plot") if k == 1 else None})
                          for k in (1, 2, 4)}}
    return SCORES[task](path, **options)
