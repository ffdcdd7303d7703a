"""``vc2 sample``: prompts in, video files out.

Everything that can be checked without the weights is checked first (prompts, numbers, output
paths), then the checkpoint is recognised and the settings checked against its configuration,
and only then are the networks built. Videos are written under a temporary name and renamed
when complete.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from ..attention import attention_backend, backend_names
from ..diffusion import SAMPLERS, SPACINGS
from ..diffusion.consistency import ORIGIN_SPACINGS
from ..diffusion.step_cache import PRESETS, parse_step_cache
from ..precision import DTYPES
from ..speedups import COMPILE_BACKENDS
from ..video_io import check_output_path, output_format
from .usage import UsageError, at_least, check_seed_range, seed

DEFAULT_SEED = 123  # the official run_text2video.sh


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def _step_cache(text: str):
    try:
        return parse_step_cache(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "sample", help="generate videos from prompts",
        description="Generate one video per prompt with a VideoCrafter checkpoint. Defaults are the released "
                    "VideoCrafter2 script's: the model's size and frame count (320x512, 16 frames), DDIM 50 steps, "
                    "eta 1.0, cfg 12, fps 28, seed 123.")
    p.add_argument("--ckpt", type=Path, required=True, help="model.ckpt or .safetensors (VideoCrafter2 / 1)")
    prompts = p.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", action="append", help="a prompt (repeat for several videos)")
    prompts.add_argument("--prompts", type=Path, metavar="FILE", help="a text file, one prompt per line")
    p.add_argument("--negative", default="", help="negative prompt: the unconditional branch of guidance "
                                                  "(default: the empty prompt, as official)")
    p.add_argument("--out", type=Path, required=True,
                   help="video.mp4 / .gif / .webp, or a folder name for PNG frames; with several prompts "
                        "NAME_000.mp4, NAME_001.mp4, ...")
    p.add_argument("--frames", type=at_least(1), help="frames to generate (default: the model's, 16)")
    p.add_argument("--height", type=at_least(1), help="height in pixels (default: the model's, 320)")
    p.add_argument("--width", type=at_least(1), help="width in pixels (default: the model's, 512)")
    p.add_argument("--steps", type=at_least(1), help="sampler steps (default 50; t2v-turbo: 4, T2V-Turbo's)")
    p.add_argument("--cfg", type=_non_negative,
                   help="guidance scale (default 12; 1 = off; t2v-turbo: 7.5, T2V-Turbo's, fed to its embedding)")
    p.add_argument("--guidance-rescale", type=_non_negative, default=0.0,
                   help="pull the guided prediction's std back to the conditional one, 0..1 (default 0 = off)")
    p.add_argument("--eta", type=_non_negative,
                   help="sampler noise (default: 1.0 for ddim and euler_ancestral; others are deterministic)")
    p.add_argument("--sampler", choices=tuple(SAMPLERS), default="ddim", help="default ddim (the official one)")
    p.add_argument("--spacing", choices=SPACINGS + tuple(ORIGIN_SPACINGS),
                   help="timesteps of the non-DDIM samplers (default logsnr; uniform is the DDIM grid; t2v-turbo: "
                        "origin-50, its default, or origin-200, T2V-Turbo-v2's)")
    p.add_argument("--lora", type=Path, metavar="FILE",
                   help="T2V-Turbo's weights: their unet_lora.pt (T2V-Turbo VC2) or unet_mg.pt (v2), read as "
                        "tensors only; sample with --sampler t2v-turbo (4 steps, cfg 7.5: their defaults)")
    p.add_argument("--lora-strength", type=_non_negative, default=1.0,
                   help="how much of the T2V-Turbo LoRA is merged (default 1, as released)")
    p.add_argument("--motion-scale", type=_non_negative,
                   help="T2V-Turbo-v2's motion guidance (their motion_gs; 0.05 in their release; default off), "
                        "for their weights with the motion condition")
    p.add_argument("--motion-share", type=_non_negative, default=0.5,
                   help="share of the timesteps, from the noisiest, that get the motion guidance (default 0.5, theirs)")
    p.add_argument("--fps", type=at_least(1), help="fps condition and file frame rate (default: the model's, 28)")
    p.add_argument("--save-fps", type=at_least(1),
                   help="frame rate written to the file when it should differ from --fps (the official script "
                        "writes 10)")
    p.add_argument("--seed", type=seed, default=DEFAULT_SEED, help="seed of the first prompt; prompt i uses seed + i")
    p.add_argument("--batch-size", type=at_least(1), default=1, help="prompts sampled together (default 1)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                   help="weights and compute (default fp32; the VAE always stays fp32)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--attention", choices=backend_names(),
                   help="attention backend (default: $VC2_ATTENTION, else auto: the Triton temporal kernel on CUDA "
                        "in bf16/fp16 inference, SDPA elsewhere)")
    p.add_argument("--context-frames", type=at_least(1),
                   help="long videos: frames per UNet call (the model's trained length, 16, works best)")
    p.add_argument("--context-overlap", type=at_least(0),
                   help="frames shared by neighbouring windows (default: a quarter of --context-frames, 4 for 16)")
    p.add_argument("--context-loop", action="store_true", help="wrap windows around the end (seamless loops)")
    p.add_argument("--split-cfg", action="store_true",
                   help="run the conditional and unconditional UNet passes separately (less memory, slower)")
    p.add_argument("--cache", type=_step_cache, default=None, metavar="PRESET",
                   help=f"step caching: reuse deep UNet features and the unconditional branch between steps; "
                        f"{', '.join(PRESETS)} (default off), or values such as deep=3,depth=2,uncond=3,first=2,"
                        f"last=1 (docs/cli.md; speed and error in docs/benchmarks.md)")
    p.add_argument("--decode-chunk", type=at_least(1), default=1, help="VAE frames decoded at a time (default 1)")
    p.add_argument("--no-offload", action="store_true",
                   help="keep the text encoder and VAE on the accelerator between uses")
    p.add_argument("--low-memory", action="store_true",
                   help="the least memory: --split-cfg and --decode-chunk 1 with the text encoder and VAE offloaded "
                        "(not with --no-offload); slower")
    p.add_argument("--compile", nargs="?", const="inductor", choices=COMPILE_BACKENDS, metavar="BACKEND",
                   help="torch.compile the UNet (BACKEND default inductor); the first step pays the compilation "
                        "(about a minute on a GPU, minutes on a CPU), reported at the end")
    p.add_argument("--channels-last", action="store_true",
                   help="run the UNet's convolutions in channels_last (NHWC) layout; same values, faster on GPUs")
    p.set_defaults(run=run)


def read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompt is not None:
        prompts = [prompt.strip() for prompt in args.prompt]
        if not all(prompts):
            raise UsageError("--prompt: an empty prompt (use --cfg 1 with a text, or give a real prompt)")
        return prompts
    if not args.prompts.is_file():
        raise UsageError(f"--prompts {args.prompts}: no such file")
    try:
        lines = args.prompts.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise UsageError(f"--prompts {args.prompts}: not UTF-8 text ({error})") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise UsageError(f"--prompts {args.prompts}: no prompts (one per line)")
    return prompts


def output_paths(out: Path, count: int) -> list[Path]:
    """One path per prompt: ``out`` itself for one, ``stem_000.ext``... for several; each checked writable."""
    output_format(out)  # an unsupported suffix is an error
    if count == 1:
        paths = [out]
    else:
        paths = [out.with_name(f"{out.stem}_{index:03d}{out.suffix}") for index in range(count)]
    for path in paths:
        check_output_path(path)
        if path.exists() and not os.access(path, os.W_OK):
            raise UsageError(f"{path}: exists and is not writable")
    return paths


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r}: not a device (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine")
    return device


def peak_memory(device: torch.device) -> str:
    """Peak memory of this run: the accelerator's allocator peak and the process's resident peak."""
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB, peak RSS {rss_gb:.2f} GB"
    return f"peak RSS {rss_gb:.2f} GB"


STEPS = {"default": 50, "t2v-turbo": 4}  # the released script's; T2V-Turbo's
CFG = {"default": 12.0, "t2v-turbo": 7.5}


def read_turbo(path: Path):
    """T2V-Turbo's weights from --lora, or a UsageError saying why the file cannot be used."""
    from ..t2v_turbo import TurboWeightsError, read_turbo_weights

    try:
        return read_turbo_weights(path)
    except TurboWeightsError as error:
        raise UsageError(f"--lora {error}") from None


def turbo_model_config(config, turbo, name: str):
    """The checkpoint's config with the UNet T2V-Turbo's weights give it (what the settings are checked against),
    or a UsageError if the checkpoint (called ``name``) is not one their files go on."""
    from ..t2v_turbo import check_turbo_base, config_for

    try:
        check_turbo_base(config.unet, name)
    except ValueError as error:
        raise UsageError(f"--lora {turbo.path.name}: {error}") from None
    return config.replace(unet=config_for(config.unet, turbo))


def make_turbo(model, turbo, strength: float):
    from ..t2v_turbo import TurboWeightsError, with_turbo

    try:
        return with_turbo(model, turbo, strength=strength)
    except TurboWeightsError as error:
        raise UsageError(f"--lora {error}") from None


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..checkpoint import build_model, open_checkpoint
    from ..pipeline import GenerationSettings, generate, low_memory
    from ..video_io import to_frames, write_video

    started = time.perf_counter()
    prompts = read_prompts(args)
    check_seed_range(args.seed, len(prompts), f"{len(prompts)} prompts")
    paths = output_paths(args.out, len(prompts))
    device = resolve_device(args.device)
    settings = GenerationSettings(
        height=args.height, width=args.width, frames=args.frames, fps=args.fps,
        steps=args.steps or STEPS.get(args.sampler, STEPS["default"]),
        cfg=CFG.get(args.sampler, CFG["default"]) if args.cfg is None else args.cfg,
        eta=args.eta, sampler=args.sampler, spacing=args.spacing, negative_prompt=args.negative,
        guidance_rescale=args.guidance_rescale, batched_cfg=not args.split_cfg, context_frames=args.context_frames,
        context_overlap=args.context_overlap, context_loop=args.context_loop, decode_chunk_frames=args.decode_chunk,
        compile=args.compile, channels_last=args.channels_last,
        step_cache=args.cache, motion_scale=args.motion_scale, motion_share=args.motion_share)
    if args.low_memory:
        if args.no_offload:
            raise UsageError("--low-memory offloads the text encoder and VAE; it cannot be combined with --no-offload")
        settings = low_memory(settings)

    if device.type == "cpu" and args.dtype != "fp32":
        print(f"note: {args.dtype} on a CPU without native half-precision instructions is about 20x slower than fp32 "
              "(docs/benchmarks.md); it saves memory only", file=sys.stderr)
    turbo = read_turbo(args.lora) if args.lora is not None else None
    checkpoint = open_checkpoint(args.ckpt)  # missing file or not a VideoCrafter checkpoint: a clear error
    info = checkpoint.info
    config = info.config if turbo is None else turbo_model_config(info.config, turbo, str(args.ckpt))
    settings = settings.resolve(config)  # every problem at once, before the networks; the plan, made once
    print(f"{info.family}: {len(prompts)} prompt(s), {settings.frames} frames at {settings.height}x{settings.width}, "
          f"{settings.sampler} {settings.steps} steps (eta {settings.eta}), cfg {settings.cfg}, fps {settings.fps}, "
          f"{args.dtype} on {device}", flush=True)
    model = build_model(checkpoint, device="cpu", dtype=DTYPES[args.dtype], for_inference=True)
    del checkpoint  # the file's tensors the model did not adopt (cast or converted ones) can go
    if turbo is not None:
        model = make_turbo(model, turbo, args.lora_strength)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loaded = time.perf_counter()

    batches = [range(start, min(start + args.batch_size, len(prompts)))
               for start in range(0, len(prompts), args.batch_size)]
    step_times: list[float] = []  # when each step ended (the first one also holds a compilation)
    with tqdm(total=None, unit="step", desc="sampling", file=sys.stderr, dynamic_ncols=True) as bar:
        def on_step(step) -> None:
            if bar.total is None:
                bar.reset(total=step.total * len(batches))
            bar.update(1)
            step_times.append(time.perf_counter())

        for batch in batches:
            with attention_backend(args.attention):  # None: $VC2_ATTENTION, else auto
                videos = generate(model, [prompts[i] for i in batch], [args.seed + i for i in batch], settings,
                                  device=device, offload=not args.no_offload, callback=on_step)
            for video, index in zip(videos, batch, strict=True):
                write_video(paths[index], to_frames(video), fps=args.save_fps or settings.fps)
                bar.write(f"wrote {paths[index]}  (seed {args.seed + index}: {prompts[index][:60]!r})")
        steps_per_second = bar.n / max(time.perf_counter() - loaded, 1e-9)
    total = time.perf_counter() - started
    print(f"done: {len(prompts)} video(s) in {total:.1f} s (loading {loaded - started:.1f} s, "
          f"{steps_per_second:.2f} steps/s), {peak_memory(device)}")
    if args.compile and len(step_times) > 2:
        first = step_times[0] - loaded  # text encoding + the first step + the compilation
        later = statistics.median(b - a for a, b in zip(step_times[1:-1], step_times[2:], strict=True))
        print(f"compile warm-up: about {first - later:.1f} s (first step {first:.1f} s with text encoding, "
              f"later steps {later:.2f} s each)")
    return 0
