"""Networks from other people's libraries, exported as they are (no wrapper, no renames) and
sampled by the runtime against the library's own sampling loop on the same noise. The libraries
are optional test dependencies (tests/peers.txt, installed without their dependencies); each test says so when one is missing."""
import numpy as np
import pytest
import torch

import fm_runtime
from export.onnx_export import export_velocity

CALLS = {"[0]": "hidden_states=x,timestep=t,encoder_hidden_states=,pooled_projections=,return_dict=False",
         ".sample": "hidden_states=x,timestep=t,encoder_hidden_states=,pooled_projections="}


@pytest.fixture(scope="module", params=sorted(CALLS))
def sd3(tmp_path_factory, request):
    """A tiny, seeded diffusers SD3 transformer and its file, exported from the call string alone:
    keywords, noise at 1 and timestep = 1000 sigma; the velocity from the tuple return_dict=False
    gives, or from the Transformer2DModelOutput it returns by default."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (tests/peers.txt)")
    torch.manual_seed(0)
    net = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8, out_channels=4).eval()
    path = tmp_path_factory.mktemp("sd3") / "sd3.onnx"
    report = export_velocity(
        net, path, data_shape=[4, 8, 8], time_convention="noise-at-1", time_scale=1000.0, divergence=False,
        call=CALLS[request.param],
        inputs={"encoder_hidden_states": "float32[5,16]", "pooled_projections": "float32[8]"})
    return diffusers, net, path, report, request.param


@pytest.mark.parametrize("steps", [1, 4])
def test_sd3_transformer_as_it_is_equals_the_schedulers_own_loop(sd3, steps):
    diffusers, net, path, report, field = sd3
    assert report.output_field == field
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    text = rng.standard_normal((2, 5, 16)).astype(np.float32)
    pooled = rng.standard_normal((2, 8)).astype(np.float32)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(sigmas=[1.0 - i / steps for i in range(steps)])
    x = torch.from_numpy(z)
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = net(hidden_states=x, timestep=t.expand(len(x)), encoder_hidden_states=torch.from_numpy(text),
                    pooled_projections=torch.from_numpy(pooled), return_dict=False)[0]
            x = scheduler.step(v, t, x, return_dict=False)[0]
    got = fm_runtime.load(path).sample(noise=z, steps=steps, solver="euler",
                                       cond={"encoder_hidden_states": text, "pooled_projections": pooled})
    np.testing.assert_allclose(got, x.numpy(), atol=1e-4)


def test_flux_transformer_as_it_is_equals_the_schedulers_own_loop(tmp_path):
    """A tiny, seeded diffusers Flux transformer: the position ids as static inputs, its guidance
    embedding as the file's guidance input (the request's weight goes in, no second half), noise at
    1 and the timestep as sigma; against FluxPipeline's loop (FlowMatchEulerDiscreteScheduler with
    the same sigmas, timestep = sigma, guidance = the weight)."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (tests/peers.txt)")
    torch.manual_seed(0)
    net = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(2, 2, 4)).eval()
    S, L = 16, 5
    img_ids = np.zeros((S, 3), np.float32)
    img_ids[:, 1], img_ids[:, 2] = np.arange(S) // 4, np.arange(S) % 4
    txt_ids = np.zeros((L, 3), np.float32)
    path = tmp_path / "flux.onnx"
    export_velocity(net, path, data_shape=[S, 8], time_convention="noise-at-1", divergence=False,
                    call="hidden_states=x,timestep=t,encoder_hidden_states=,pooled_projections=,img_ids=,txt_ids=,"
                         "guidance=,return_dict=False",
                    inputs={"encoder_hidden_states": f"float32[{L},16]", "pooled_projections": "float32[8]",
                            "img_ids": f"float32[{S},3]:static", "txt_ids": f"float32[{L},3]:static",
                            "guidance": "float32[]:guidance"})
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, S, 8)).astype(np.float32)
    text, pooled = rng.standard_normal((2, L, 16)).astype(np.float32), rng.standard_normal((2, 8)).astype(np.float32)
    steps, w = 4, 3.5
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(sigmas=[1.0 - i / steps for i in range(steps)])
    x = torch.from_numpy(z)
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = net(hidden_states=x, timestep=(t / 1000).expand(2), guidance=torch.full((2,), w),
                    encoder_hidden_states=torch.from_numpy(text), pooled_projections=torch.from_numpy(pooled),
                    img_ids=torch.from_numpy(img_ids), txt_ids=torch.from_numpy(txt_ids), return_dict=False)[0]
            x = scheduler.step(v, t, x, return_dict=False)[0]
    got = fm_runtime.load(path).sample(noise=z, steps=steps, solver="euler", guidance=w,
                                       cond={"encoder_hidden_states": text, "pooled_projections": pooled,
                                             "img_ids": img_ids, "txt_ids": txt_ids})
    np.testing.assert_allclose(got, x.numpy(), atol=1e-4)


def test_sd3_with_guidance_against_a_negative_prompt_equals_the_pipelines_cfg(sd3):
    """SD3's classifier-free guidance: the negative prompt's embeddings as the request's null_cond
    (the file declares no nulls), v = v_neg + w (v_pos - v_neg) at every step, as StableDiffusion3Pipeline
    computes it on the batch [negative, positive]."""
    diffusers, net, path, _, _ = sd3
    rng = np.random.default_rng(2)
    z = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    text, pooled = rng.standard_normal((2, 5, 16)).astype(np.float32), rng.standard_normal((2, 8)).astype(np.float32)
    neg_text, neg_pooled = rng.standard_normal((5, 16)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    steps, w = 3, 4.5
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(sigmas=[1.0 - i / steps for i in range(steps)])
    x = torch.from_numpy(z)
    both_text = torch.cat([torch.from_numpy(neg_text).expand(2, 5, 16), torch.from_numpy(text)])
    both_pooled = torch.cat([torch.from_numpy(neg_pooled).expand(2, 8), torch.from_numpy(pooled)])
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = net(hidden_states=torch.cat([x, x]), timestep=t.expand(4), encoder_hidden_states=both_text,
                    pooled_projections=both_pooled, return_dict=False)[0]
            v_neg, v_pos = v.chunk(2)
            x = scheduler.step(v_neg + w * (v_pos - v_neg), t, x, return_dict=False)[0]
    got = fm_runtime.load(path).sample(noise=z, steps=steps, solver="euler", guidance=w,
                                       cond={"encoder_hidden_states": text, "pooled_projections": pooled},
                                       null_cond={"encoder_hidden_states": neg_text, "pooled_projections": neg_pooled})
    np.testing.assert_allclose(got, x.numpy(), atol=1e-4)
