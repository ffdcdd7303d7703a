"""The loader's ComfyUI MODEL: VideoCrafter's scaled process in k-diffusion form, and KSampler's euler on it against
vc2's own euler, with stand-ins of the ComfyUI modules a model family builds on (tests/fake_comfy_model.py).

The KSampler-equivalent here is ComfyUI's sampling arithmetic written out (comfy.samplers.KSAMPLER.sample and
k-diffusion's sample_euler): noise from torch's generator seeded with the seed, ``noise_scaling`` at the first
sigma (pure noise when it is the table's largest), cond and uncond batched through ``apply_model``, guidance on
the denoised outputs, Euler steps x += (x - denoised) / sigma * (sigma_next - sigma), ``process_latent_in/out``.
tools/comfy_native_check.py runs the same comparison through the real comfy.sample in a ComfyUI install.

Expected difference, derived. Both solve dz/dsigma = eps in z = x_t / a_t (vc2_core/diffusion/levels.py,
ve_form.py) at the same integer timesteps, from the same x_T (seed, one CPU generator; pure noise at
sigma_max), with guidance on eps (vc2) or on x0 = z - sigma eps (ComfyUI) - equal in exact arithmetic because
x0 is affine in eps with the same z and sigma. They differ in (1) the output: ComfyUI returns the state z, vc2
the UNet-space latent a_0 z at the official last level (a_0 = sqrt(alpha_bar_0) s_0 = 0.99957), so
vc2 = a_0 * KSampler exactly; with sigmas ending at 0 (ComfyUI's schedulers) KSampler returns z at sigma 0 =
the last step's denoised estimate, which vc2 reports as that step's pred_x0. (2) float32 rounding: per step,
sigma rounded to float32 (u/2 relative, u = 2^-23), the model input a z (u), the step (u), and guidance on x0
instead of eps: x0_c - x0_u cancels terms of size |z| ~ sigma |noise| that eps_c - eps_u does not, an error of
about cfg u sigma |noise| in x0, i.e. cfg u |noise| in the step direction, which the Euler step multiplies by
|sigma_next - sigma| and later steps shrink like the noise (by sigma_next / sigma each). Each step thus adds
about (cfg + 2) u of the latent's scale, and N steps N (cfg + 2) u, times the UNet's gain G on perturbations
of its input. The test allows G = 10 (a margin, not derived): N = 5, cfg = 7.5 gives 5 * 9.5 * 1.19e-7 * 10 =
5.7e-5 of max|latent|. Measured (2026-12-03, CPU): 8.8e-6, i.e. G = 1.6. The a_0 factor (4.3e-4) is 7x
the bound, so the test also tells the two ends apart.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_pack import comfy, load_pack, node, tiny_file  # noqa: F401 (fixtures)

from vc2_core.config import preset
from vc2_core.diffusion import seeded_noise
from vc2_core.diffusion.levels import make_levels
from vc2_core.diffusion.schedule import DiffusionSchedule
from vc2_core.diffusion.ve_form import VEForm
from vc2_core.pipeline import GenerationSettings, sample_latents

STEPS, CFG, FPS, SEED = 5, 7.5, 8, 7
SHAPE = (1, 4, 4, 16, 24)  # (b, c, frames, h, w): 4 frames of 32x48 pixels
U = 2.0**-23
BOUND = STEPS * (CFG + 2) * U * 10  # the derived relative bound (module docstring)


# ---- the scaled process in k-diffusion form -------------------------------------------------------------------


def test_without_the_latent_scale_the_form_is_stable_diffusions():
    form = VEForm(DiffusionSchedule(preset("vc1-512").schedule))  # VC1: no scale_arr
    sigmas = form.sigmas[::97]
    assert torch.allclose(form.signal(sigmas), 1 / (1 + sigmas**2).sqrt(), rtol=1e-15)
    between = (form.sigmas[:-1].log() + form.sigmas[1:].log()).mul(0.5).exp()  # (T - 1,) midpoints in log sigma
    assert torch.allclose(form.signal(between), 1 / (1 + between**2).sqrt(), rtol=4e-5)  # interpolated there
    noise = torch.randn(2, 4, 3, 2, 2, dtype=torch.float64)
    start = form.start(form.sigmas[-1], noise, torch.zeros_like(noise), from_pure_noise=True)
    assert torch.allclose(start, noise * (1 + form.sigmas[-1] ** 2).sqrt(), rtol=1e-12)  # ComfyUI's EPS start


def test_with_the_latent_scale_the_model_input_is_the_scaled_process():
    schedule = DiffusionSchedule(preset("vc2-512").schedule)
    form = VEForm(schedule)
    t = torch.tensor([0, 399, 400, 999])
    a = schedule.alphas_cumprod.double()[t].sqrt() * schedule.scale_arr.double()[t]
    assert torch.allclose(form.signal(form.sigmas[t]), a, rtol=1e-12)
    assert torch.equal(form.timestep(form.sigmas[t].float()), t.double())  # float32 sigmas find their timestep
    # the scale matters: at t = 999 (s = 0.7) SD's 1 / sqrt(1 + sigma^2) would be 1.3e-3 off
    assert (1 / (1 + form.sigmas[999] ** 2).sqrt() / a[-1] - 1).abs() > 1e-3
    x0, eps = torch.randn(2, 4, 2, 3, 3, dtype=torch.float64), torch.randn(2, 4, 2, 3, 3, dtype=torch.float64)
    sigma = form.sigmas[t[1:3]]
    z = x0 + sigma.reshape(2, 1, 1, 1, 1) * eps
    x_t = schedule.q_sample(x0.float(), t[1:3], eps.float()).double()
    assert torch.allclose(form.model_input(sigma, z), x_t, atol=1e-6)
    assert torch.allclose(form.denoised(sigma, eps, z), x0, atol=1e-12)


# ---- KSampler's euler on the MODEL against vc2's euler --------------------------------------------------------


def ksampler_euler(patcher, positive: list, negative: list, latent: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """ComfyUI's KSampler arithmetic (module docstring) on the MODEL; returns the LATENT's samples."""
    base = patcher.model
    sampling = base.model_sampling
    noise = torch.randn(latent.size(), generator=torch.Generator().manual_seed(SEED))
    pure_noise = math.isclose(float(sampling.sigma_max), float(sigmas[0]), rel_tol=1e-5)
    x = sampling.noise_scaling(sigmas[0], noise, base.process_latent_in(latent), pure_noise)
    conds = [base.extra_conds(cross_attn=c[0][0], noise=noise, **c[0][1]) for c in (positive, negative)]
    context = torch.cat([c["c_crossattn"].cond for c in conds])  # (2b, L, d): cond then uncond, one batch
    fps = torch.cat([c["fps"].cond for c in conds])  # (2b,)
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i].expand(2 * x.shape[0])
        cond, uncond = base.apply_model(torch.cat([x, x]), sigma, c_crossattn=context, fps=fps).chunk(2)
        denoised = uncond + (cond - uncond) * CFG
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return base.process_latent_out(x)


def vc2_euler(model, positive: list, negative: list) -> tuple[torch.Tensor, torch.Tensor]:
    """The VC2 Sampler's (and vc2 sample's) euler: its LATENT samples and the last step's x0 estimate (unscaled)."""
    settings = GenerationSettings(fps=FPS, steps=STEPS, cfg=CFG, sampler="euler").resolve_for_latents(model.config,
                                                                                                         SHAPE)
    noise = seeded_noise([SEED])
    steps = []
    z = sample_latents(model.unet, positive[0][0], negative[0][0], noise(torch.Size(SHAPE)), settings, noise,
                       callback=steps.append)
    return z / model.config.scale_factor, steps[-1].pred_x0 / model.config.scale_factor


def test_ksampler_euler_on_the_model_equals_vc2_euler(comfy):  # noqa: F811
    model, clip, _, comfy_model = node("VC2_CheckpointLoader").load("tiny.safetensors", "fp32", "sdpa")
    assert comfy_model is model.patcher and comfy_model.model.diffusion_model is model.unet  # one patcher, one UNet
    encode = node("VC2_TextEncode").encode
    positive = node("VC2_ConditioningFPS").set_fps(encode(clip, "a red ball rolls")[0], FPS)[0]
    negative = node("VC2_ConditioningFPS").set_fps(encode(clip, "")[0], FPS)[0]
    latent = node("VC2_EmptyVideoLatent").make(model, 48, 32, 4, 1)[0]["samples"]
    with torch.no_grad():
        expected, last_x0 = vc2_euler(model, positive, negative)
        official = node("VC2_Sigmas").sigmas(comfy_model, STEPS, "logsnr", "official")[0]
        ours = ksampler_euler(comfy_model, positive, negative, latent, official)
        zero = node("VC2_Sigmas").sigmas(comfy_model, STEPS, "logsnr", "zero")[0]
        ours_to_zero = ksampler_euler(comfy_model, positive, negative, latent, zero)
    a_0 = make_levels(model.schedule, STEPS, "logsnr").alphas[-1]
    scale = expected.abs().max()
    error = ((a_0 * ours - expected).abs().max() / scale).item()
    error_to_zero = ((ours_to_zero - last_x0).abs().max() / last_x0.abs().max()).item()
    print(f"relative error: official end {error:.2e}, zero end {error_to_zero:.2e}; bound {BOUND:.2e}")
    assert error < BOUND and error_to_zero < BOUND
    assert (ours - expected).abs().max() > 5 * BOUND * scale  # the a_0 factor is real: not within rounding


def test_the_model_takes_fps_from_the_conditioning_and_refuses_other_inputs(comfy):  # noqa: F811
    model, clip, _, comfy_model = node("VC2_CheckpointLoader").load("tiny.safetensors", "fp32", "sdpa")
    base = comfy_model.model
    embedding = node("VC2_TextEncode").encode(clip, "a red ball rolls")[0][0][0]
    noise = torch.zeros(SHAPE)
    assert base.extra_conds(cross_attn=embedding, noise=noise)["fps"].cond.tolist() == [model.config.fps]
    x, sigma = torch.randn(SHAPE), base.model_sampling.sigmas[500:501]
    with torch.no_grad():
        slow = base.apply_model(x, sigma, c_crossattn=embedding, fps=torch.tensor([4]))
        fast = base.apply_model(x, sigma, c_crossattn=embedding, fps=torch.tensor([24]))
    assert not torch.allclose(slow, fast)  # the tiny preset has the fps condition
    with pytest.raises(ValueError, match="ControlNets do not apply"):
        base.apply_model(x, sigma, c_crossattn=embedding, control={"output": []})
    with pytest.raises(ValueError, match="video latents"):
        base.apply_model(x[:, :, 0], sigma, c_crossattn=embedding)
    with pytest.raises(ValueError, match="MODEL output of Load VideoCrafter"):
        node("VC2_Sigmas").sigmas(type("Patcher", (), {"model": torch.nn.Linear(1, 1)})(), 5, "logsnr", "official")


def test_diffusion_model_wrappers_wrap_the_unet_call(comfy):  # noqa: F811
    """EasyCache's hook: a DIFFUSION_MODEL wrapper gets (x, timestep, context, fps, transformer_options)."""
    _, clip, _, comfy_model = node("VC2_CheckpointLoader").load("tiny.safetensors", "fp32", "sdpa")
    embedding = node("VC2_TextEncode").encode(clip, "")[0][0][0]
    seen = []

    def wrapper(executor, *args):
        seen.append((tuple(args[0].shape), float(args[1][0]), isinstance(args[-1], dict)))
        return executor(*args)

    options = {"wrappers": {"diffusion_model": [wrapper]}}
    sigma = comfy_model.model.model_sampling.sigmas[250:251]
    with torch.no_grad():
        comfy_model.model.apply_model(torch.randn(SHAPE), sigma, c_crossattn=embedding, transformer_options=options)
    assert seen == [(SHAPE, 250.0, True)]


def test_block_and_attention_patches_it_cannot_apply_are_reported_once(comfy, caplog):  # noqa: F811
    """FreeU's output_block_patch and PAG's attn1 replacement hook ComfyUI's own UNet: a warning names them, once."""
    _, clip, _, comfy_model = node("VC2_CheckpointLoader").load("tiny.safetensors", "fp32", "sdpa")
    embedding = node("VC2_TextEncode").encode(clip, "")[0][0][0]
    sigma, x = comfy_model.model.model_sampling.sigmas[250:251], torch.randn(SHAPE)
    patched = {"patches": {"output_block_patch": [lambda h, hsp, options: (h, hsp)]},
               "patches_replace": {"attn1": {("middle", 0, 0): object()}}}
    with torch.no_grad(), caplog.at_level("WARNING"):
        plain = comfy_model.model.apply_model(x, sigma, c_crossattn=embedding, transformer_options={})
        assert not caplog.records
        for _ in range(2):
            same = comfy_model.model.apply_model(x, sigma, c_crossattn=embedding, transformer_options=patched)
    assert torch.equal(plain, same)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "patches.output_block_patch, patches_replace.attn1" in warnings[0], warnings


# ---- LoRA files for LoraLoaderModelOnly ------------------------------------------------------------------------


def comfyui_lora_patches(model_keys: list[str], lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What ComfyUI's LoRA loading adds to each MODEL weight at strength 1 (comfy.lora: a layer P of a weight key
    ``P.weight`` is found by the bare key P, scaled by P.alpha / rank, 1 without an alpha); unmatched keys ignored."""
    deltas = {}
    for key in model_keys:
        layer = key.removesuffix(".weight")
        if key.endswith(".weight") and f"{layer}.lora_down.weight" in lora:
            down, up = lora[f"{layer}.lora_down.weight"], lora[f"{layer}.lora_up.weight"]
            alpha = lora[f"{layer}.alpha"].item() / down.shape[0] if f"{layer}.alpha" in lora else 1.0
            deltas[key] = alpha * (up.float() @ down.float())
    return deltas


def test_a_vc2_lora_in_comfyui_layout_patches_the_model_like_the_pack(comfy, tmp_path):  # noqa: F811
    from safetensors.torch import load_file

    from vc2_core.modules import UNetModel
    from vc2_core.training.lora import inject_lora, lora_weight_deltas, read_lora, save_lora

    model, _, _, comfy_model = node("VC2_CheckpointLoader").load("tiny.safetensors", "fp32", "sdpa")
    unet = UNetModel(model.config.unet)  # vc2_core's classes (the pack has its own copy), for the group split
    inject_lora(unet, ["spatial", "temporal"], rank=2, alpha=3.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    lora_dir = comfy.root / "models" / "loras"
    save_lora(unet, lora_dir / "vc2.safetensors", family="tiny", groups=["spatial", "temporal"], rank=2, alpha=3.0,
              targets="attention")
    node("VC2_LoraToComfyUI").convert("vc2.safetensors")
    converted = load_file(str(lora_dir / "vc2_comfyui.safetensors"))
    keys = list(comfy_model.model.state_dict())
    patches = comfyui_lora_patches(keys, converted)
    expected = lora_weight_deltas(read_lora(lora_dir / "vc2.safetensors"))  # what VC2 LoRA Loader adds
    assert len(patches) == len(expected) > 0 and set(patches) == {f"diffusion_model.{k}" for k in expected}
    assert all(torch.allclose(patches[f"diffusion_model.{k}"], v, rtol=1e-6) for k, v in expected.items())
    assert comfyui_lora_patches(keys, load_file(str(lora_dir / "vc2.safetensors"))) == {}  # the vc2 layout: none
