"""Files conditioned on tensors (contract version 4), end to end: the three call shapes of
tests/cond_nets.py exported with extra inputs and symbolic lengths, sampled by the runtime from
one loaded file at three lengths and compared with a torch fixed-step solve of the original
network in its own time convention (same tableau, same noise and conditions); guidance against
the same nulls; padding; the refusals; the CLI; the JavaScript sampler."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

import fm_runtime
from export.onnx_export import export_velocity
from fm_runtime.solve.solvers import SOLVERS, VELOCITY_SOLVERS, tableau_step, time_grid

from . import cond_nets
from .conftest import run_cli, run_process
from .node_bridge import needs_node, node_sample

TOL = 1e-4


def reference(field, x0: np.ndarray, steps: int, solver: str, noise_at_1: bool = False) -> np.ndarray:
    """The fixed-step solve in torch with the runtime's tableau, in the network's own time: from
    t = 0 to 1, or (noise_at_1) from tau = 1 down to 0 on the mirrored grid."""
    method, times = SOLVERS[solver], time_grid(steps)
    x = torch.from_numpy(x0.copy())
    with torch.no_grad():
        for i in range(steps):
            t, h = times[i], times[i + 1] - times[i]
            x = tableau_step(method, field, x, 1.0 - t, -h) if noise_at_1 else tableau_step(method, field, x, t, h)
    return x.numpy()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cond")
    est, tr, act = cond_nets.make_estimator(), cond_nets.make_transformer(), cond_nets.make_action_expert()
    export_velocity(est, d / "est.onnx", data_shape="4,T", call="x,mask,mu,t,spks",
                    inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
                    nulls={"mu": "zeros", "spks": "zeros"}, symbols={"T": {"min": 4, "max": 256, "multiple_of": 4}})
    export_velocity(tr, d / "tr.onnx", data_shape=[6, 4],
                    call="hidden_states=x,encoder_hidden_states=txt,pooled_projections=pooled,timestep=t",
                    inputs={"txt": "float32[L,8]", "pooled": "float32[5]"}, nulls={"txt": "zeros", "pooled": "zeros"},
                    symbols={"L": {"min": 1, "max": 77}}, time_convention="noise-at-1", time_scale=1000.0)
    export_velocity(act, d / "act.onnx", data_shape=[6, 2], call="x,t,prefix,prefix_mask",
                    inputs={"prefix": "float32[P,5]", "prefix_mask": "float32[P]:static"},
                    symbols={"P": {"min": 1, "max": 64}}, time_convention="noise-at-1")
    return {"est": (est, d / "est.onnx"), "tr": (tr, d / "tr.onnx"), "act": (act, d / "act.onnx"), "dir": d}


def est_request(T: int, n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed + T)
    valid = [T, T - 3, max(1, T // 2)][:n]
    mask = np.zeros((n, 1, T), np.float32)
    for r, v in enumerate(valid):
        mask[r, :, :v] = 1.0
    mu = rng.standard_normal((n, 4, T)).astype(np.float32) * mask
    spks = rng.standard_normal(3).astype(np.float32)
    z = rng.standard_normal((n, 4, T)).astype(np.float32)
    return z, {"mu": mu, "mask": mask, "spks": spks}


def est_field(net, cond, guidance=1.0):
    mask, mu = torch.from_numpy(cond["mask"]), torch.from_numpy(cond["mu"])
    spks = torch.from_numpy(np.broadcast_to(cond["spks"], (len(mu), 3)).copy())

    def f(x, t):
        tt = torch.full((len(x),), t, dtype=torch.float32)
        vc = net(x, mask, mu, tt, spks)
        if guidance == 1.0:
            return vc
        vu = net(x, mask, torch.zeros_like(mu), tt, torch.zeros_like(spks))
        return vu + guidance * (vc - vu)
    return f


@pytest.mark.parametrize("solver", sorted(VELOCITY_SOLVERS))
def test_estimator_matches_torch_at_three_lengths_from_one_file(files, solver):
    net, path = files["est"]
    s = fm_runtime.load(path)
    for T in (8, 20, 36):
        z, cond = est_request(T)
        for guidance in (1.0, 2.5):
            got = s.sample(noise=z, cond=cond, steps=4, solver=solver, guidance=guidance)
            want = reference(est_field(net, cond, guidance), z * cond["mask"], 4, solver)
            assert got.shape == (3, 4, T)
            print(f"estimator {solver} T={T} guidance {guidance:g}: max |runtime - torch| {np.abs(got - want).max():.1e}")
            assert np.abs(got - want).max() <= TOL, (T, guidance)
            assert np.all(got[cond["mask"].repeat(4, 1) == 0] == 0)      # exact zeros where masked


def test_padding_leaves_a_row_unchanged(files):
    """A row sampled alone equals the same row inside a batch padded to a longer T."""
    _, path = files["est"]
    s = fm_runtime.load(path)
    rng = np.random.default_rng(7)
    mu = rng.standard_normal((4, 12)).astype(np.float32)
    z = rng.standard_normal((1, 4, 12)).astype(np.float32)
    spks = rng.standard_normal(3).astype(np.float32)
    alone = s.sample(noise=z, cond={"mu": mu, "spks": spks}, steps=6, guidance=2.0)
    padded_z = rng.standard_normal((2, 4, 20)).astype(np.float32)
    padded_z[0, :, :12] = z[0]
    padded_mu = np.zeros((2, 4, 20), np.float32)
    padded_mu[0, :, :12], padded_mu[1] = mu, rng.standard_normal((4, 20))
    mask = np.ones((2, 1, 20), np.float32)
    mask[0, :, 12:] = 0.0
    batch = s.sample(noise=padded_z, cond={"mu": padded_mu, "mask": mask, "spks": spks}, steps=6, guidance=2.0)
    diff = float(np.abs(batch[0, :, :12] - alone[0]).max())
    print(f"padding: max |row alone - row in a padded batch| = {diff:.2e}")
    assert diff <= 1e-5
    assert np.all(batch[0, :, 12:] == 0)


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
def test_noise_at_one_networks_match_torch(files, solver):
    rng = np.random.default_rng(3)
    tr, tr_path = files["tr"]
    s = fm_runtime.load(tr_path)
    for L in (1, 7, 30):
        txt = rng.standard_normal((2, L, 8)).astype(np.float32)
        pooled = rng.standard_normal((2, 5)).astype(np.float32)
        z = rng.standard_normal((2, 6, 4)).astype(np.float32)
        for w in (1.0, 3.0):
            got = s.sample(noise=z, cond={"txt": txt, "pooled": pooled}, steps=5, solver=solver, guidance=w)

            def field(x, tau, txt=txt, pooled=pooled, w=w):
                ts = torch.full((len(x),), 1000.0 * tau)
                c = tr(x, torch.from_numpy(txt), torch.from_numpy(pooled), ts)
                if w == 1.0:
                    return c
                u = tr(x, torch.zeros(txt.shape), torch.zeros(pooled.shape), ts)
                return u + w * (c - u)
            diff = np.abs(got - reference(field, z, 5, solver, noise_at_1=True)).max()
            print(f"transformer {solver} L={L} guidance {w:g}: max |runtime - torch| {diff:.1e}")
            assert diff <= TOL, (L, w)
    act, act_path = files["act"]
    s = fm_runtime.load(act_path)
    for P in (1, 5, 17):
        prefix = rng.standard_normal((3, P, 5)).astype(np.float32)
        pmask = np.ones((3, P), np.float32)
        pmask[1, P // 2 + 1:] = 0.0
        z = rng.standard_normal((3, 6, 2)).astype(np.float32)
        got = s.sample(noise=z, cond={"prefix": prefix, "prefix_mask": pmask}, steps=10, solver=solver)

        def field(x, tau, prefix=prefix, pmask=pmask):
            return act(x, torch.full((len(x),), tau), torch.from_numpy(prefix), torch.from_numpy(pmask))
        diff = np.abs(got - reference(field, z, 10, solver, noise_at_1=True)).max()
        print(f"action expert {solver} P={P}: max |runtime - torch| {diff:.1e}")
        assert diff <= TOL, P


def torch_logp(field, x1: np.ndarray, mask: np.ndarray, steps: int = 8) -> np.ndarray:
    """log p1(x1) of the masked field by the change of variables in torch: [x, A] integrated
    back from t = 1 to 0 with midpoint steps, A' = exact divergence (autograd Jacobian per row),
    log N(x0) over the valid dimensions only."""
    n, shape = len(x1), x1.shape[1:]
    d = int(np.prod(shape))
    m = torch.from_numpy(np.broadcast_to(mask, x1.shape).copy()).reshape(n, d)

    def aug(state, t):
        x = state[:, :d].reshape(n, *shape)
        v = field(x, t).reshape(n, d) * m
        jac = torch.autograd.functional.jacobian(lambda xx: (field(xx.reshape(n, *shape), t).reshape(n, d) * m).sum(0),
                                                 x.reshape(n, d))          # [d, n, d]
        div = torch.stack([torch.diagonal(jac[:, r, :]).sum() for r in range(n)])
        return torch.cat([v, div[:, None]], 1)

    state = torch.cat([torch.from_numpy(x1).reshape(n, d), torch.zeros(n, 1)], 1)
    times = time_grid(steps)
    for i in range(steps, 0, -1):
        state = tableau_step(SOLVERS["midpoint"], aug, state, times[i], times[i - 1] - times[i])
    z, a = state[:, :d].detach().numpy(), state[:, d].detach().numpy()
    valid = m.numpy().sum(1)
    return -0.5 * (z ** 2 * m.numpy()).sum(1) - 0.5 * valid * np.log(2 * np.pi) + a     # a = -int_0^1 div v dt


def test_log_prob_with_conditions_matches_torch(files):
    """log p(x | mu, spks) with a mask, exact divergence, against torch autograd at small D, with
    and without guidance; sampling with return_logprob gives the same densities forward."""
    net, path = files["est"]
    s = fm_runtime.load(path)
    z, cond = est_request(8)
    for w in (1.0, 2.0):
        x = s.sample(noise=z, cond=cond, guidance=w, steps=8)
        got = s.log_prob(x, cond=cond, guidance=w, steps=8, divergence="exact")
        want = torch_logp(est_field(net, cond, w), x, cond["mask"])
        print(f"log p with conditions, guidance {w:g}: runtime {got}, torch {want}")
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
        # forward (with the samples) and backward (from them): one ODE, so they agree as steps grow
        x, forward = s.sample(noise=z, cond=cond, guidance=w, steps=64, return_logprob=True)
        assert np.abs(forward - s.log_prob(x, cond=cond, guidance=w, steps=64)).max() <= 0.01


def test_seeded_sampling_and_chunks_slice_conditions_with_their_rows(files):
    _, path = files["est"]
    s = fm_runtime.load(path)
    _, cond = est_request(16, n=3)
    whole = s.sample(3, cond=cond, seed=5)
    parts = np.concatenate([r.samples for _, r in s.sample_chunks(0, 3, 5, cond=cond, chunk=2)])
    assert np.array_equal(whole, parts)
    one = s.sample(3, cond={"mu": cond["mu"][0], "spks": cond["spks"]}, dims={"T": 16}, seed=5)
    assert one.shape == (3, 4, 16)
    threads = fm_runtime.load(path, threads=2, tile=1).sample(3, cond=cond, seed=5)
    assert np.array_equal(whole, threads)


@pytest.mark.parametrize("change, error, words", [
    (lambda c: c.pop("mu"), fm_runtime.UsageError, "needs the condition 'mu'"),
    (lambda c: c.update(nope=np.zeros(3, np.float32)), fm_runtime.UsageError, "has no input 'nope'"),
    (lambda c: c.update(mu=c["mu"].astype(np.complex64)), fm_runtime.InputError, "must be float32"),
    (lambda c: c.update(spks=np.zeros((2, 2, 3), np.float32)), fm_runtime.InputError, "has shape"),
    (lambda c: c.update(mask=np.ones((3, 1, 24), np.float32)), fm_runtime.UsageError, "symbols disagree"),
    (lambda c: c.update(mu=np.zeros((3, 4, 18), np.float32), mask=np.ones((3, 1, 18), np.float32)),
     fm_runtime.UsageError, "a multiple of 4"),
    (lambda c: c.update(mu=np.zeros((3, 4, 260), np.float32), mask=np.ones((3, 1, 260), np.float32)),
     fm_runtime.UsageError, "<= 256"),
    (lambda c: c["mu"].__setitem__((0, 0, 0), np.nan), fm_runtime.InputError, "NaN or Inf"),
    (lambda c: c.update(mu=c["mu"][:2]), fm_runtime.UsageError, "disagree on rows"),
])
def test_bad_conditions_are_refused(files, change, error, words):
    _, path = files["est"]
    s = fm_runtime.load(path)
    _, cond = est_request(20)
    change(cond)
    with pytest.raises(error, match=words):
        s.sample(cond=cond, seed=0)
    with pytest.raises(fm_runtime.UsageError, match="dims gives T = 12, condition 'mu' gives T = 8"):
        s.sample(2, cond={"mu": np.zeros((4, 8), np.float32), "spks": np.zeros(3, np.float32)}, dims={"T": 12})


def test_cli_conditions(files, tmp_path):
    _, path = files["est"]
    _, cond = est_request(20)
    for k, v in cond.items():
        np.save(tmp_path / f"{k}.npy", v)
    args = ["sample", str(path), "--cond", f"mu={tmp_path / 'mu.npy'}", "--cond", f"spks={tmp_path / 'spks.npy'}",
            "--cond", f"mask={tmp_path / 'mask.npy'}", "--seed", "3", "--guidance", "2"]
    run_cli("fm-run", *args, "--out", str(tmp_path / "x.npy"), cwd=tmp_path)
    want = fm_runtime.load(path).sample(cond=cond, seed=3, guidance=2.0)
    assert np.array_equal(np.load(tmp_path / "x.npy"), want)
    info = run_cli("fm-run", "info", str(path), "--json").stdout
    d = json.loads(info)
    assert d["contract_version"] == 4 and d["symbols"] == {"T": "4..256, multiple of 4"}
    assert d["inputs"]["mu"].startswith("float32[B, 4, T] condition, null zeros")
    for extra, code, words in [
        (["--cond", f"mu={tmp_path / 'mu.npy'}"], 2, "needs the condition 'spks'"),
        (["--cond", f"mu={tmp_path / 'mu.npy'}", "--cond", f"spks={tmp_path / 'spks.npy'}", "--dim", "T=24"], 2,
         "symbols disagree"),
        (["--cond", "mu"], 2, "NAME=FILE"),
        (["--cond", f"mu={tmp_path / 'none.npy'}", "--cond", f"spks={tmp_path / 'spks.npy'}"], 4, "not found"),
    ]:
        p = run_cli("fm-run", "sample", str(path), *extra, "-n", "2", "--out", str(tmp_path / "y.npy"), check=False)
        assert p.returncode == code and words in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "y.npy").exists()
    conds = [a for k in cond for a in ("--cond", f"{k}={tmp_path / (k + '.npy')}")]
    run_cli("fm-run", "logprob", str(path), str(tmp_path / "x.npy"), *conds, "--out", str(tmp_path / "lp.npy"))
    assert np.allclose(np.load(tmp_path / "lp.npy"), fm_runtime.load(path).log_prob(want, cond=cond), atol=1e-4)


@pytest.mark.slow      # end to end through the CLIs in fresh interpreters: CI runs it with -m slow
def test_export_cli_with_inputs(tmp_path):
    import sys
    from pathlib import Path
    env = {"PYTHONPATH": str(Path(cond_nets.__file__).parent) + ":" + ":".join(sys.path)}
    run_process("fm-export", "--module", "cond_nets:make_estimator", "--data-shape", "4,T", "--input",
                "mu=float32[4,T]", "--input", "mask=float32[1,T]:mask", "--input", "spks=float32[3]", "--call",
                "x,mask,mu,t,spks", "--null", "mu=zeros", "--null", "spks=zeros", "--symbol", "T=4:256:4",
                "--out", str(tmp_path / "e.onnx"), env=env)
    s = fm_runtime.load(tmp_path / "e.onnx")
    assert s.spec.symbols == {"T": {"min": 4, "max": 256, "multiple_of": 4}}
    assert [i["name"] for i in s.spec.inputs] == ["mu", "mask", "spks"]
    p = run_process("fm-export", "--module", "cond_nets:make_estimator", "--data-shape", "4,T", "--input",
                    "mu=float32[4,T]", "--call", "x,mask,mu,t,spks", "--out", str(tmp_path / "f.onnx"), env=env,
                    check=False)
    assert p.returncode == 8 and "cannot read 'mask'" in p.stderr and not (tmp_path / "f.onnx").exists()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_samples_the_same(files, tmp_path):
    from pathlib import Path
    js = Path(__file__).resolve().parents[1] / "js"
    if not (js / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("js/node_modules is missing: run `npm ci` in js/")
    _, path = files["est"]
    z, cond = est_request(20)
    want = fm_runtime.load(path).sample(noise=z, cond=cond, steps=4, solver="heun", guidance=2.0)
    request = {"noise": z.ravel().tolist(), "cond": {k: {"data": v.ravel().tolist(), "dims": list(v.shape)}
                                                     for k, v in cond.items()}}
    (tmp_path / "req.json").write_text(json.dumps(request))
    script = tmp_path / "run.mjs"
    script.write_text(f"""
import {{ readFileSync }} from 'node:fs';
import {{ load }} from {json.dumps((js / 'src' / 'node.mjs').as_uri())};
const r = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'req.json'))}, 'utf8'));
const s = await load({json.dumps(str(path))});
const out = await s.sample({{ noise: Float32Array.from(r.noise), cond: r.cond, steps: 4, solver: 'heun', guidance: 2 }});
console.log(JSON.stringify({{ dims: out.dims, data: Array.from(out.data) }}));
let refused = '';
try {{ await s.sample({{ n: 1, cond: {{ mu: r.cond.mu }} }}); }} catch (e) {{ refused = e.name; }}
console.log(refused);
""")
    p = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120, cwd=js)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    out = json.loads(lines[0])
    got = np.array(out["data"], np.float32).reshape(out["dims"])
    print(f"JavaScript vs Python: max |diff| {np.abs(got - want).max():.2e}")
    assert np.abs(got - want).max() <= 1e-5
    assert lines[1] == "UsageError"


@needs_node
def test_javascript_samples_the_transformer_and_action_expert_the_same(files, tmp_path):
    """The noise-at-1 transformer (guided, three prompt lengths) and the action expert (three
    prefix lengths) from one loaded file each, in onnxruntime-node and in Python."""
    rng = np.random.default_rng(11)
    jobs, wants = [], []
    for key, make in [("tr", lambda L: {"txt": rng.standard_normal((2, L, 8)), "pooled": rng.standard_normal((2, 5))}),
                      ("act", lambda P: {"prefix": rng.standard_normal((2, P, 5)), "prefix_mask": np.ones((2, P))})]:
        s, reqs = fm_runtime.load(files[key][1]), []
        for size in (1, 7, 30):
            cond = {k: v.astype(np.float32) for k, v in make(size).items()}
            z = rng.standard_normal((2, 6, 4 if key == "tr" else 2)).astype(np.float32)
            req = dict(noise=z, cond=cond, steps=5, solver="midpoint", **({"guidance": 3.0} if key == "tr" else {}))
            reqs.append(req)
            wants.append(s.sample(**req))
        jobs.append((files[key][1], reqs))
    got = node_sample(tmp_path, jobs)
    worst = max(float(np.abs(x - w).max()) for (x, _), w in zip(got, wants))
    print(f"JavaScript vs Python, transformer and action expert: max |diff| {worst:.2e}")
    assert worst <= 1e-5


def test_a_transformer_encoder_exports_with_log_likelihoods(tmp_path):
    """torch's nn.TransformerEncoder exports with its divergence graph (checked against torch's
    autodiff under the math attention kernel), and log p runs."""
    r = export_velocity(cond_nets.make_encoder_field(), tmp_path / "enc.onnx", data_shape=[6, 4])
    assert r.divergence.startswith("yes"), r.divergence
    s = fm_runtime.load(tmp_path / "enc.onnx")
    x = s.sample(4, seed=0, steps=4)
    assert np.isfinite(s.log_prob(x, steps=4, divergence="exact")).all()


def test_a_condition_stage_runs_once_per_request(tmp_path):
    """A file with a condition stage (token ids -> mu and mask, T = 2L): a request that gives the
    tokens runs the stage exactly once, for every solver and with guidance, and samples what the
    stage's outputs given directly sample; log p takes the tokens too."""
    net, stage = cond_nets.export_token_decoder(tmp_path / "tts.onnx")
    s = fm_runtime.load(tmp_path / "tts.onnx")
    assert s.spec.stage["outputs"] == ["mu", "mask"] and s.stage_calls == 0
    tokens = np.array([[1, 5, 2, 7, 0], [3, 3, 1, 0, 6]], np.int64)
    spks = np.array([0.3, -1.0, 0.5], np.float32)
    with torch.no_grad():
        mu, mask = (a.numpy() for a in stage(torch.from_numpy(tokens)))
    z = np.random.default_rng(0).standard_normal((2, 4, 10)).astype(np.float32)
    calls = 0
    for solver in sorted(VELOCITY_SOLVERS):
        for w in (1.0, 2.0):
            got = s.sample(noise=z, cond={"tokens": tokens, "spks": spks}, solver=solver, steps=3, guidance=w)
            calls += 1
            assert s.stage_calls == calls
            want = s.sample(noise=z, cond={"mu": mu, "mask": mask, "spks": spks}, solver=solver, steps=3, guidance=w)
            assert s.stage_calls == calls and np.array_equal(got, want)
    whole = s.sample(2, cond={"tokens": tokens, "spks": spks}, seed=5)      # per-row tokens follow their rows
    parts = [r.samples for _, r in s.sample_chunks(1, 2, 5, cond={"tokens": tokens, "spks": spks}, chunk=1)]
    assert np.array_equal(whole[1:], np.concatenate(parts))                 # a shard: rows [1, 2)
    calls += 2
    one = s.sample(3, cond={"tokens": tokens[0], "spks": spks}, seed=0)      # one prompt for every row
    assert one.shape == (3, 4, 10) and s.stage_calls == calls + 1
    lp = s.log_prob(want, cond={"tokens": tokens, "spks": spks})
    assert np.allclose(lp, s.log_prob(want, cond={"mu": mu, "mask": mask, "spks": spks}))
    with pytest.raises(fm_runtime.UsageError, match="comes from the condition stage"):
        s.sample(2, cond={"tokens": tokens, "mu": mu, "spks": spks})
    with pytest.raises(fm_runtime.InputError, match="must be int64"):
        s.sample(2, cond={"tokens": tokens.astype(np.float32), "spks": spks})
