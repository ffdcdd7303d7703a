"""Time our UNet forward against diffusers' UNet3DConditionModel built to the same network.

    python benchmarks/unet_vs_diffusers.py       # CPU, fp32, mid config -> results/unet_vs_diffusers_cpu.json
    python benchmarks/unet_vs_diffusers.py --device cuda --dtype bfloat16 --preset vc2-512 \
        --frames 16 --height 40 --width 64
    python benchmarks/unet_vs_diffusers.py --mode train   # training step: forward + loss + backward

Both networks are built in one process from fixed seeds (random weights, every zero-initialised
output layer randomised), put in eval mode, and timed under torch.no_grad with the calls
interleaved (ours, diffusers, ours, diffusers, ...; one call each per round). Reported: medians and
the ratio ours / diffusers (< 1: ours is faster). Diffusers uses its default attention processor
(AttnProcessor2_0, i.e. SDPA); ours uses each of ``--backends`` (default sdpa).

How the configs map (``diffusers_unet3d_config``): block_out_channels = model_channels * channel_mult,
layers_per_block = num_res_blocks, cross_attention_dim = context_dim, norm 32 groups / eps 1e-5, and
a CrossAttn*Block3D at every level whose downsampling rate is in attention_resolutions (all but the
deepest for VideoCrafter2). Diffusers' ``attention_head_dim`` is, despite the comment in
UNet3DConditionModel ("num_attention_heads defaults to attention_head_dim"), the real head WIDTH
of the UNet's attention layers: the blocks build ``Transformer2DModel(out_channels // n, n)`` and
``TransformerTemporalModel(out_channels // n, n)``, i.e. out_channels // n heads of width n, and
``transformer_in`` gets 8 heads of width n. So ``attention_head_dim = num_head_channels`` gives
exactly ``config.heads_at(ch)`` at every level (mid: 2/4/8/8 heads of 32; vc2-512: 5/10/20/20 of 64)
and our init_attn's 8 heads of num_head_channels. The script checks the head counts it built.

Remaining differences (the script counts them; mid config, 1x8x32x32 input):
- fps embedding: ours adds ``fps_embedding`` (Linear mc->4mc, SiLU, Linear 4mc->4mc), diffusers has
  no fps conditioning: +82,432 parameters at mid (58,067,780 vs 57,985,348, +0.14 %), +2,050,560 at
  vc2-512 (+0.15 %), and a negligible ~0.2 MFLOP. It is the only parameter difference: the multiset of
  parameter shapes is otherwise identical (checked below, 1x1 convolutions counted as linear maps).
- Text context: diffusers ``repeat_interleave``s the context (and the time embedding) over the t
  frames and projects to_k / to_v of every cross-attention for each frame; ours projects once per
  sample and shares it (the query rows of the t frames attend to one key/value set). With t frames
  diffusers does (t-1) * b * 77 * context_dim * ch * 4 extra FLOPs per cross-attention layer:
  +1.3776 GFLOP at mid with 8 frames (sum of ch over the 16 cross-attentions = 2496). The ResBlocks'
  time-embedding projections likewise run on b*t rows in diffusers (b rows in ours): +14.5 MFLOP.
  Less our fps embedding (0.16 MFLOP) that is 1,391,919,104 FLOPs, exactly the measured gap (diffusers
  +1.10 % at mid, 1x8x32x32; +59.81 GFLOP = +0.48 % at vc2-512, 1x16x40x64).
- conv_in: both are a single Conv2d(in, mc, 3); UNet3DConditionModel has no temporal block after
  conv_in (only ``transformer_in``), so there is nothing to subtract there.
- Time embedding: identical sizes (sinusoid of mc, cos first, -> 4mc -> 4mc).
- transformer_in vs init_attn: identical sizes, 8 heads of num_head_channels (inner width 8*32 = 256 at
  mid, 8*64 = 512 at vc2-512, wider than the mc channels it sees) and depth 1; ours keeps the official
  1x1 Conv1d projections (weights (c, c', 1)), applied as a linear map, diffusers uses nn.Linear.
- Numerics, not size: our ResBlock / output GroupNorms (official GroupNorm32) and the temporal
  transformers' GroupNorm (frame_group_norm, statistics pooled over all frames as in diffusers) compute
  in float32 and cast back; diffusers' run in the input dtype, so in bf16 ours does extra casts.
  Dropout (0.1 in the temporal convolutions) is inactive in eval mode in both.
The configs the mapping cannot express (transformer_depth != 1, scale-shift norm, resblock up/down,
relative position, causal or text temporal attention, no temporal conv / attention / init_attn,
num_heads instead of num_head_channels) are rejected with an error instead of being compared unfairly.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode over one forward at the benchmark input,
with SDPA forced to its math kernel during the count (the fused CPU kernel has no FLOP formula, so it
would count attention as 0); matmul and convolution FLOPs are 2 * multiply-adds.

On a small shared CPU, other processes make 2-thread timings swing by up to 10x (OpenMP threads wait
for a descheduled peer); ``--threads 1`` gives steadier numbers there.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import statistics
from pathlib import Path

import torch
import torch.nn as nn
from common import machine, mid_config, time_call, write_result
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vc2_core.attention import attention_backend, backend_names
from vc2_core.config import UNetConfig, preset
from vc2_core.modules import UNetModel
from vc2_core.random_weights import randomize_zero_initialized

TEXT_TOKENS = 77


def diffusers_unet3d_config(config: UNetConfig) -> dict:
    """``UNet3DConditionModel`` kwargs for the same network as ``UNetModel(config)`` (see the module docstring).

    Raises ValueError for configs UNet3DConditionModel cannot build.
    """
    problems = []
    if config.num_head_channels == -1:
        problems.append("num_heads instead of num_head_channels: diffusers' transformer_in needs one head width "
                        "(8 heads of attention_head_dim), so the head width must be the same at every level")
    needed = {"temporal_conv": True, "temporal_attention": True, "addition_attention": True,
              "temporal_selfatt_only": True, "use_relative_position": False, "use_causal_attention": False,
              "transformer_depth": 1, "temporal_transformer_depth": 1, "use_scale_shift_norm": False,
              "resblock_updown": False, "conv_resample": True, "tempspatial_aware": False}
    for name, value in needed.items():
        if getattr(config, name) != value:
            problems.append(f"{name}={getattr(config, name)!r} (UNet3DConditionModel has {value!r})")
    if config.context_dim is None:
        problems.append("context_dim None: UNet3DConditionModel always cross-attends to a context")
    levels = len(config.channel_mult)
    has_attention = [2**level in config.attention_resolutions for level in range(levels)]
    if problems:
        raise ValueError("UNet3DConditionModel cannot build this network: " + "; ".join(problems))
    block_out_channels = tuple(config.model_channels * mult for mult in config.channel_mult)
    return {
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "down_block_types": tuple("CrossAttnDownBlock3D" if attn else "DownBlock3D" for attn in has_attention),
        "up_block_types": tuple("CrossAttnUpBlock3D" if attn else "UpBlock3D" for attn in reversed(has_attention)),
        "block_out_channels": block_out_channels,
        "layers_per_block": config.num_res_blocks,
        "downsample_padding": 1,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": config.context_dim,
        # the head WIDTH (diffusers' naming): heads = channels // attention_head_dim at each level
        "attention_head_dim": config.num_head_channels,
    }


def check_heads(ours: nn.Module, theirs: nn.Module, config: UNetConfig) -> None:
    """Assert that every attention layer of diffusers has the heads and head width ours has at that width."""
    from diffusers.models.attention_processor import Attention

    from vc2_core.modules.attention_layers import CrossAttention

    ours_heads = collections.Counter((m.heads, m.dim_head) for m in ours.modules() if isinstance(m, CrossAttention))
    theirs_heads = collections.Counter((m.heads, m.inner_dim // m.heads) for m in theirs.modules()
                                       if isinstance(m, Attention))
    if ours_heads != theirs_heads:
        raise AssertionError(f"attention heads differ: ours {dict(ours_heads)} vs diffusers {dict(theirs_heads)}")
    for ch in sorted({config.model_channels * m for m in config.channel_mult}):
        print(f"  channels {ch:5d}: {config.heads_at(ch)[0]} heads of {config.heads_at(ch)[1]} (both)")


def shape_multiset(module: nn.Module) -> collections.Counter:
    """Parameter shapes with trailing size-1 kernel axes dropped (a 1x1 convolution counts as a linear map)."""
    shapes = collections.Counter()
    for p in module.parameters():
        shape = tuple(p.shape)
        while len(shape) > 2 and shape[-1] == 1:
            shape = shape[:-1]
        shapes[shape] += 1
    return shapes


@torch.no_grad()
def randomize_zero_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Give diffusers' zero-initialised weights (temporal conv4) the same kind of values as ours get."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and not layer.weight.any():
            fan_in = layer.weight[0].numel()
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / fan_in**0.5)
            if layer.bias is not None:
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.05)


def count_flops(fn) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mid", help="'mid' (default) or a preset name (vc2-512, ...)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=32, help="latent height")
    parser.add_argument("--width", type=int, default=32, help="latent width")
    parser.add_argument("--backends", nargs="+", default=["sdpa"], choices=backend_names()[1:],
                        help="our attention backends (diffusers always uses its default, SDPA)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--mode", choices=["forward", "train"], default="forward",
                        help="forward: eval + no_grad; train: train mode, forward + loss + backward (gradients "
                             "of every parameter, freed after each call; the optimizer step is the same for both)")
    parser.add_argument("--out", type=Path)
    return parser.parse_args()


def build_unets(config, diffusers_config: dict, device: str, dtype: torch.dtype):
    """Ours and diffusers' UNet3DConditionModel with the same seeds (random non-zero weights), heads checked."""
    from diffusers import UNet3DConditionModel

    torch.manual_seed(0)
    ours = UNetModel(config).eval()
    randomize_zero_initialized(ours, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    theirs = UNet3DConditionModel(**diffusers_config).eval()
    randomize_zero_parameters(theirs, torch.Generator().manual_seed(1))
    ours.to(device, dtype)
    theirs.to(device, dtype)
    check_heads(ours, theirs, config)
    return ours, theirs


def make_inputs(config, args: argparse.Namespace, dtype: torch.dtype):
    """Latents (b, c, t, h, w), timesteps (b,), text context (b, tokens, d) and fps (b,)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(args.batch, config.in_channels, args.frames, args.height, args.width, generator=g)
    context = torch.randn(args.batch, TEXT_TOKENS, config.context_dim, generator=g)
    t = torch.full((args.batch,), 500, device=args.device)
    fps = torch.full((args.batch,), 28, device=args.device)
    return x.to(args.device, dtype), t, context.to(args.device, dtype), fps


def compare_parameters(ours: torch.nn.Module, theirs: torch.nn.Module) -> dict:
    params_ours = sum(p.numel() for p in ours.parameters())
    params_theirs = sum(p.numel() for p in theirs.parameters())
    shapes_ours, shapes_theirs = shape_multiset(ours), shape_multiset(theirs)
    only_ours = sorted((shapes_ours - shapes_theirs).elements())
    only_theirs = sorted((shapes_theirs - shapes_ours).elements())
    print(f"parameters: ours {params_ours:,}  diffusers {params_theirs:,}  "
          f"(ours - diffusers = {params_ours - params_theirs:+,}, {params_ours / params_theirs - 1:+.2%})")
    print(f"  parameter shapes only in ours: {only_ours}; only in diffusers: {only_theirs}")
    return {"ours": params_ours, "diffusers": params_theirs, "ours_minus_diffusers": params_ours - params_theirs,
            "shapes_only_in_ours": [list(s) for s in only_ours],
            "shapes_only_in_diffusers": [list(s) for s in only_theirs]}


def time_contenders(args: argparse.Namespace, modules: tuple[torch.nn.Module, torch.nn.Module], run_ours,
                    run_theirs) -> dict[str, list[float]]:
    """{contender: seconds per call}: ours under each backend and diffusers, interleaved one call per round."""
    contenders = {f"ours_{backend}": backend for backend in args.backends} | {"diffusers": None}

    def training_step(run):
        def step():
            run().float().square().mean().backward()
            for module in modules:
                module.zero_grad(set_to_none=True)
        return step

    def call(name: str):
        backend = contenders[name]
        run = run_theirs if backend is None else run_ours
        step = training_step(run) if args.mode == "train" else run
        if backend is None:
            return step

        def with_backend():  # backward passes included
            with attention_backend(backend):
                return step()
        return with_backend

    if args.mode == "train":
        for module in modules:
            module.train()
    samples = {name: [] for name in contenders}
    with torch.no_grad() if args.mode == "forward" else contextlib.nullcontext():
        for _ in range(args.warmup):
            for name in contenders:
                time_call(call(name), warmup=0, repeats=1, device=args.device)
        for _ in range(args.repeats):  # interleaved: one call of each per round
            for name in contenders:
                samples[name] += time_call(call(name), warmup=0, repeats=1, device=args.device)["samples_s"]
    return samples


def summarise(samples: dict[str, list[float]], processors: list[str]) -> tuple[dict, dict, dict]:
    """Timings per contender, ours/diffusers ratios of medians, and medians of the per-round ratios (printed)."""
    timings = {}
    for name, values in samples.items():
        timings[name] = {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values),
                         "repeats": len(values), "samples_s": values}
    base = timings["diffusers"]["median_s"]
    ours = [name for name in samples if name != "diffusers"]
    ratios = {f"{name}/diffusers": timings[name]["median_s"] / base for name in ours}
    # per-round ratios of the interleaved pairs: robust to load that drifts during the run
    paired = {f"{name}/diffusers": statistics.median(a / b for a, b in zip(samples[name], samples["diffusers"],
                                                                              strict=True))
              for name in ours}
    for name, timing in timings.items():
        ratio = ratios.get(f"{name}/diffusers")
        print(f"{name:>14}: median {timing['median_s'] * 1e3:8.1f} ms  (min {timing['min_s'] * 1e3:.1f}, "
              f"max {timing['max_s'] * 1e3:.1f}, n={timing['repeats']})"
              + (f"  ours/diffusers {ratio:.3f} (median of per-round ratios {paired[name + '/diffusers']:.3f})"
                 if ratio is not None else f"  [{', '.join(processors)}]"))
    return timings, ratios, paired


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import diffusers
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # .to(dtype) warns about from_pretrained even in float32

    config = mid_config() if args.preset == "mid" else preset(args.preset).unet
    config = dataclasses.replace(config, use_checkpoint=False)
    diffusers_config = diffusers_unet3d_config(config)
    dtype = getattr(torch, args.dtype)
    ours, theirs = build_unets(config, diffusers_config, args.device, dtype)
    processors = sorted({type(p).__name__ for p in theirs.attn_processors.values()})
    params = compare_parameters(ours, theirs)

    x, t, context, fps = make_inputs(config, args, dtype)

    def run_ours():
        return ours(x, t, context, fps)

    def run_theirs():
        return theirs(x, t, encoder_hidden_states=context, return_dict=False)[0]

    with torch.no_grad():
        out_ours, out_theirs = run_ours(), run_theirs()
    assert out_ours.shape == out_theirs.shape == x.shape[:1] + (config.out_channels,) + x.shape[2:], (
        out_ours.shape, out_theirs.shape)
    del out_ours, out_theirs

    with attention_backend(args.backends[0]):
        flops_ours = count_flops(run_ours)
    flops_theirs = count_flops(run_theirs)
    print(f"FLOPs per forward: ours {flops_ours / 1e9:.2f} G  diffusers {flops_theirs / 1e9:.2f} G  "
          f"(ours - diffusers = {(flops_ours - flops_theirs) / 1e9:+.3f} G, {flops_ours / flops_theirs - 1:+.2%})")

    timings, ratios, paired = summarise(time_contenders(args, (ours, theirs), run_ours, run_theirs), processors)

    suffix = "" if args.mode == "forward" else "_train"
    out = args.out or Path(__file__).parent / "results" / f"unet_vs_diffusers_{args.device.split(':')[0]}{suffix}.json"
    write_result(out, {
        "benchmark": "unet_vs_diffusers",
        "machine": machine() | {"diffusers": diffusers.__version__},
        "config": dataclasses.asdict(config) | {"name": args.preset},
        "diffusers_config": diffusers_config,
        "diffusers_attention_processors": processors,
        "input": {"batch": args.batch, "frames": args.frames, "latent_height": args.height,
                  "latent_width": args.width, "text_tokens": TEXT_TOKENS, "dtype": args.dtype,
                  "device": args.device, "mode": args.mode},
        "params": params,
        "flops": {"ours": flops_ours, "diffusers": flops_theirs, "ours_minus_diffusers": flops_ours - flops_theirs,
                  "counted_with": "FlopCounterMode, SDPA math kernel, our backend " + args.backends[0]},
        "timings": timings,
        "ratios": ratios,
        "ratios_paired_median": paired,
    })


if __name__ == "__main__":
    main()
