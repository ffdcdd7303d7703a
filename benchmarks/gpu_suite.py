"""Every GPU measurement of issue 19 in one process, sized for one call of at most 8 minutes on a lent H100/H200.

    bash benchmarks/gpu_suite.sh                       # on the GPU machine -> benchmarks/results/gpu_suite_cuda.json
    python benchmarks/gpu_suite.py --dry-run --out /tmp/suite.json   # CPU: the tiny model at tiny sizes, every part

Random weights from fixed seeds (the full VideoCrafter2 model: text encoder, VAE, UNet), the released sampler
defaults (DDIM 50 steps, eta 1, cfg 12, fps 28), 16 x 320 x 512, bf16 (the VAE in fp32, as ``vc2 sample``).
The parts run in this order; each is timed, an error is recorded in its place instead of ending the run, the
JSON is rewritten after every part, and a part whose estimate no longer fits ``--budget-s`` is recorded as skipped:

1. ``reference``: one UNet forward (batch 2 = one guided step at the sample's shape, t = 500) in fp32 and in bf16,
   eager: their relative L2 distance is the bf16 noise level the other paths are compared with.
2. ``memory``: peak GPU memory (allocator peak) and time of the default sample as ``vc2 sample`` runs it (text
   encoder and VAE offloaded) and of the low-memory mode (``pipeline.low_memory``: sequential guidance, VAE frame
   by frame, offload).
3. ``sample/<variant>``: the whole sample with everything on the GPU, one warm-up then ``repeats`` timed: ``eager``
   (attention ``auto``), ``compile`` (inductor), ``channels_last``, ``compile+channels_last``, and
   ``diffusers-unet3d`` (diffusers' UNet3DConditionModel at the same size in the same sampler). Each records
   total / per-step / VAE time, peak memory, the warm-up's extra time (the compilation), and its agreement with
   ``eager``: the relative L2 of one UNet forward (to compare with ``reference``) and of the final video, and
   the video's PSNR (pixels in [-1, 1]).
4. ``train_step``: forward + MSE loss + backward at batch 1, 16 x 40 x 64 latents, bf16 weights, no
   checkpointing: ours with ``sdpa`` and ``triton`` attention and diffusers', calls interleaved.
5. ``attention``: temporal attention forward + backward at VC2's shapes, the Triton kernel against SDPA.
6. ``train_checkpointing``: ``train_step.py`` (AdamW, bf16 autocast) at batch 4 with gradient checkpointing, in a
   child process: peak memory and step time.
7. Experiments, last because they may not fit: ``train_step_compiled`` (our training step under inductor) and
   ``sample/compile-cudagraphs`` (torch.compile mode ``reduce-overhead``: CUDA graphs).

The dry run (``--dry-run``) runs the same code on the CPU with the ``tiny`` preset (its UNet at one level, the
transformers in the middle block only), 4 x 16 x 24, 2 steps, fp32, torch.compile's ``eager`` backend instead of
inductor (Dynamo's capture without AOTAutograd: the shortest trace): it checks the script, not the numbers
(tests/test_gpu_suite.py runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import math
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from common import machine
from full_sample import DiffusersUNet
from unet_vs_diffusers import diffusers_unet3d_config, randomize_zero_parameters

from vc2_core.attention import attention, attention_backend
from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.modules import UNetModel
from vc2_core.pipeline import GenerationSettings, generate, latent_shape, low_memory
from vc2_core.precision import cast_for_inference
from vc2_core.random_weights import randomize_zero_initialized
from vc2_core.speedups import prepared_unet, set_channels_last

HERE = Path(__file__).resolve().parent
PROMPT = "a red ball bouncing on a wooden table"


@dataclass(frozen=True)
class Plan:
    """What one run measures: sizes, repeats, the dtype and the compile backend."""

    preset: str
    unet_changes: dict  # UNetConfig fields changed from the preset's
    frames: int
    height: int
    width: int
    steps: int
    repeats: int  # timed samples per variant, after one warm-up
    train_frames: int
    train_height: int  # latent size of the training steps
    train_width: int
    train_rounds: int
    checkpointing_batch: int
    attention_shapes: tuple[tuple[str, int, int, int], ...]  # (name, rows, heads, frames)
    head_dim: int
    dtype: torch.dtype
    compile_backend: str
    estimates_s: dict[str, float]  # a part runs only if its estimate fits the time left


GPU_PLAN = Plan(
    preset="vc2-512", unet_changes={}, frames=16, height=320, width=512, steps=50, repeats=2,
    train_frames=16, train_height=40, train_width=64, train_rounds=5, checkpointing_batch=4,
    attention_shapes=(("temporal 40x64", 2 * 40 * 64, 5, 16), ("init_attn 40x64", 2 * 40 * 64, 8, 16),
                      ("temporal 20x32", 2 * 20 * 32, 10, 16), ("temporal 10x16", 2 * 10 * 16, 20, 16)),
    head_dim=64, dtype=torch.bfloat16, compile_backend="inductor",
    estimates_s={"reference": 15, "memory": 35, "sample/eager": 25, "sample/compile": 130, "sample/channels_last": 25,
                 "sample/diffusers-unet3d": 35, "train_step": 30, "attention": 10, "sample/compile+channels_last": 90,
                 "train_checkpointing": 60, "train_step_compiled": 150, "sample/compile-cudagraphs": 120},
)
DRY_PLAN = Plan(
    preset="tiny", unet_changes={"channel_mult": (1,), "attention_resolutions": ()},
    frames=4, height=16, width=24, steps=2, repeats=1,
    train_frames=4, train_height=8, train_width=8, train_rounds=1, checkpointing_batch=2,
    attention_shapes=(("temporal 4x4", 2 * 4 * 4, 2, 4),), head_dim=16, dtype=torch.float32,
    compile_backend="eager", estimates_s={},
)


def model_config(plan: Plan):
    config = preset(plan.preset)
    return config.replace(unet=dataclasses.replace(config.unet, **plan.unet_changes))


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (clamped, as the writers do): 10 log10(2^2 / MSE)."""
    mse = float((video.clamp(-1, 1).double() - reference.clamp(-1, 1).double()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


class Clock:
    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> dict:
        if self.device.type != "cuda":
            return {}
        return {"peak_allocated_GiB": torch.cuda.max_memory_allocated(self.device) / 2**30,
                "peak_reserved_GiB": torch.cuda.max_memory_reserved(self.device) / 2**30}


class Suite:
    """Runs parts against a time budget and rewrites the results file after each one."""

    def __init__(self, out: Path, budget_s: float, plan: Plan, header: dict):
        self.out, self.budget_s, self.plan = out, budget_s, plan
        self.started = time.perf_counter()
        self.result = header | {"parts": {}}

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def part(self, name: str, run: Callable[[], dict]) -> dict | None:
        estimate = self.plan.estimates_s.get(name, 0.0)
        if estimate > self.left_s():
            entry = {"skipped": f"its estimate {estimate:.0f} s is over the {self.left_s():.0f} s left of the budget"}
            value = None
        else:
            start = time.perf_counter()
            try:
                value = run()
                entry = dict(value)
            except Exception as error:  # one part failing must not lose the others' numbers
                value = None
                entry = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:500],
                         "traceback_tail": traceback.format_exc().splitlines()[-6:]}
            entry["part_s"] = time.perf_counter() - start
        self.result["parts"][name] = entry
        self.result["elapsed_s"] = time.perf_counter() - self.started
        self.write()
        shown = {k: v for k, v in entry.items() if not isinstance(v, (list, dict))}
        print(f"[{self.result['elapsed_s']:6.1f} s] {name}: {json.dumps(shown, default=str)[:400]}", flush=True)
        return value

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.result, indent=1, default=str) + "\n")


def header(device: torch.device, plan: Plan, dry_run: bool) -> dict:
    info = machine()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for package in ("triton", "diffusers", "transformers"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu_memory_GiB": props.total_memory / 2**30, "sm_count": props.multi_processor_count,
                 "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm",
                                             "--format=csv,noheader"], capture_output=True, text=True,
                                            timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            info["driver"] = f"unknown ({error})"
    plan_fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    return {"benchmark": "gpu_suite", "dry_run": dry_run, "machine": info,
            "plan": plan_fields | {"dtype": str(plan.dtype)}, "sampler": "ddim", "cfg": 12.0, "eta": 1.0, "fps": 28}


class Samples:
    """The sample-level parts over one model (built once, on the device)."""

    def __init__(self, plan: Plan, device: torch.device):
        self.plan, self.device, self.clock = plan, device, Clock(device)
        self.config = model_config(plan)
        self.settings = GenerationSettings(height=plan.height, width=plan.width, frames=plan.frames,
                                           steps=plan.steps, fps=28).resolve(self.config)
        torch.manual_seed(0)
        with torch.device(device):
            self.model = VideoCrafter(self.config).eval()
        randomize_zero_initialized(self.model.unet, torch.Generator().manual_seed(1))
        self.ours = self.model.unet
        g = torch.Generator().manual_seed(2)
        shape = latent_shape(self.config, plan.frames, plan.height, plan.width, 2)  # one guided step: batch 2
        self.x = torch.randn(shape, generator=g).to(device)
        self.context = torch.randn(2, 77, self.config.unet.context_dim, generator=g).to(device)
        self.t = torch.full((2,), 500, device=device)
        self.eager_forward: torch.Tensor | None = None
        self.eager_video: torch.Tensor | None = None

    def forward(self, unet: nn.Module) -> torch.Tensor:
        dtype = next(unet.parameters()).dtype
        with torch.no_grad():
            return unet(self.x.to(dtype), self.t, self.context.to(dtype), 28).float()

    def reference(self) -> dict:
        """fp32 (no TF32 in convolutions either) then (cast in place, for every later part) the plan's dtype."""
        tf32 = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            fp32 = self.forward(self.ours)
        finally:
            torch.backends.cudnn.allow_tf32 = tf32
        cast_for_inference(self.model, self.plan.dtype)
        self.eager_forward = self.forward(self.ours)
        return {"forward_rel_l2_dtype_vs_fp32": relative_l2(self.eager_forward, fp32),
                "note": "the bf16 noise level of one UNet forward: compare each variant's forward_rel_l2_vs_eager"}

    def sample(self, settings: GenerationSettings, offload: bool) -> tuple[dict, torch.Tensor]:
        stamps: list[float] = []
        start = self.clock.now()
        video = generate(self.model, [PROMPT], [0], settings, device=self.device, offload=offload,
                         callback=lambda _step: stamps.append(self.clock.now()))
        end = self.clock.now()
        per_step = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
        return {"total_s": end - start, "per_step_s": per_step, "first_step_s": stamps[0] - start,
                "vae_s": end - stamps[-1], "finite": bool(torch.isfinite(video).all())}, video

    def memory(self) -> dict:
        """Peak memory of the default sample (offload, as vc2 sample) and of the low-memory mode."""
        found = {}
        for name, settings in (("default", self.settings), ("low_memory", low_memory(self.settings))):
            self.model.text_encoder.to("cpu")  # offload: they go to the device only while they work
            self.model.vae.to("cpu")
            self.clock.reset_peak()
            timing, _ = self.sample(settings, offload=True)
            found[name] = timing | self.clock.peak()
        self.model.to(self.device)
        return found

    def variant(self, name: str, settings: GenerationSettings, unet: nn.Module | None = None) -> dict:
        """A whole-sample variant: warm-up, timed repeats, peak memory, agreement with eager."""
        self.model.unet = self.ours if unet is None else unet
        try:
            warm, _ = self.sample(settings, offload=False)
            self.clock.reset_peak()
            runs, video = [], None
            for _ in range(self.plan.repeats):
                run, video = self.sample(settings, offload=False)
                runs.append(run)
            found = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "finite"}
            found |= {"all_finite": all(run["finite"] for run in runs), "runs": runs, "warmup_total_s":
                      warm["total_s"], "warmup_extra_s": warm["total_s"] - found["total_s"]} | self.clock.peak()
            if not isinstance(unet, DiffusersUNet):  # our UNet: how close to eager it computes
                same = unet if unet is not None else prepared_unet(self.ours, compile_backend=settings.compile,
                                                                    channels_last=settings.channels_last)
                found["forward_rel_l2_vs_eager"] = relative_l2(self.forward(same), self.eager_forward)
                if name == "eager":
                    self.eager_video = video
                if self.eager_video is not None:
                    found["video_rel_l2_vs_eager"] = relative_l2(video, self.eager_video)
                    found["video_psnr_vs_eager_db"] = psnr(video, self.eager_video)
            return found
        finally:
            self.model.unet = self.ours
            set_channels_last(self.ours, False)

    def diffusers_unet(self) -> nn.Module:
        from diffusers import UNet3DConditionModel

        torch.manual_seed(0)
        with torch.device(self.device):
            inner = UNet3DConditionModel(**diffusers_unet3d_config(self.config.unet)).eval()
        randomize_zero_parameters(inner, torch.Generator().manual_seed(1))
        return DiffusersUNet(inner.to(dtype=self.plan.dtype))


def kernel_backends(device: torch.device) -> tuple[str, ...]:
    """The attention backends compared: SDPA and the Triton kernel on CUDA; SDPA and math elsewhere (the dry run:
    the kernel needs CUDA or Triton's interpreter, tests/test_kernels.py checks it there)."""
    return ("sdpa", "triton") if device.type == "cuda" else ("sdpa", "math")


def train_step_part(plan: Plan, device: torch.device, compiled: bool, diffusers_s: float | None = None) -> dict:
    """Forward + MSE + backward, batch 1, bf16 weights, no checkpointing: ours (sdpa, triton) vs diffusers,
    interleaved rounds (as unet_vs_diffusers.py --mode train). ``compiled``: ours under torch.compile only,
    compared with ``diffusers_s`` (the diffusers median of the eager part)."""
    clock = Clock(device)
    config = dataclasses.replace(model_config(plan).unet, use_checkpoint=False)
    torch.manual_seed(0)
    with torch.device(device):
        ours = UNetModel(config).train()
    randomize_zero_initialized(ours, torch.Generator().manual_seed(1))
    ours.to(dtype=plan.dtype)
    contenders: dict[str, tuple[Callable, str | None]] = {}
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, config.in_channels, plan.train_frames, plan.train_height, plan.train_width,
                    generator=g).to(device, plan.dtype)
    context = torch.randn(1, 77, config.context_dim, generator=g).to(device, plan.dtype)
    t, fps = torch.full((1,), 500, device=device), torch.full((1,), 28, device=device)
    if compiled:
        fast = torch.compile(ours, backend=plan.compile_backend)
        contenders["ours_sdpa_compiled"] = (lambda: fast(x, t, context, fps), "sdpa")
    else:
        for backend in kernel_backends(device):
            contenders[f"ours_{backend}"] = (lambda: ours(x, t, context, fps), backend)
        from diffusers import UNet3DConditionModel

        torch.manual_seed(0)
        with torch.device(device):
            theirs = UNet3DConditionModel(**diffusers_unet3d_config(config)).train()
        randomize_zero_parameters(theirs, torch.Generator().manual_seed(1))
        theirs.to(dtype=plan.dtype)
        contenders["diffusers"] = (lambda: theirs(x, t, encoder_hidden_states=context, return_dict=False)[0], None)

    def step(name: str) -> float:
        run, backend = contenders[name]
        start = clock.now()
        with attention_backend(backend):  # around the backward too (None: the default)
            run().float().square().mean().backward()
        elapsed = clock.now() - start
        for module in (ours, *([] if compiled else [theirs])):
            module.zero_grad(set_to_none=True)
        return elapsed

    warmup = {name: step(name) for name in contenders}  # compiles, autotunes, warms the allocator
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(plan.train_rounds):
        for name in contenders:
            times[name].append(step(name))
    found = {name: {"median_s": statistics.median(v), "min_s": min(v), "samples_s": v, "warmup_s": warmup[name]}
             for name, v in times.items()}
    diffusers_s = found["diffusers"]["median_s"] if "diffusers" in found else diffusers_s
    if diffusers_s is not None:
        for name in contenders:
            found[name]["ratio_to_diffusers"] = found[name]["median_s"] / diffusers_s
    return found


def attention_part(plan: Plan, device: torch.device) -> dict:
    """Temporal attention forward + backward, each backend that runs here, relative L2 against fp32 math."""
    clock = Clock(device)
    found = {}
    for name, rows, heads, frames in plan.attention_shapes:
        g = torch.Generator().manual_seed(3)
        q, k, v, grad = (torch.randn(rows, frames, heads, plan.head_dim, generator=g).to(device, plan.dtype)
                         for _ in range(4))
        reference = attention(q.float(), k.float(), v.float(), backend="math")
        row = {}
        for backend in kernel_backends(device):
            leaves = [tensor.detach().requires_grad_() for tensor in (q, k, v)]

            def fwd_bwd(leaves=leaves, backend=backend):
                out = attention(*leaves, backend=backend)
                out.backward(grad)
                return out

            out = fwd_bwd()  # warm-up (Triton compiles its kernels)
            times = []
            for _ in range(10):
                start = clock.now()
                fwd_bwd()
                times.append(clock.now() - start)
            row[backend] = {"fwd_bwd_median_ms": statistics.median(times) * 1e3,
                            "rel_l2_vs_fp32_math": relative_l2(out.float(), reference)}
        found[name] = row
    return found


def checkpointing_part(plan: Plan, device: torch.device) -> dict:
    """train_step.py's child (AdamW, autocast) at the plan's checkpointing batch, checkpointing on."""
    precision = "bf16" if plan.dtype == torch.bfloat16 else "fp32"
    command = [sys.executable, str(HERE / "train_step.py"), "--preset", plan.preset, "--device", device.type,
               "--precision", precision, "--frames", str(plan.train_frames), "--height", str(plan.train_height),
               "--width", str(plan.train_width), "--steps", "3", "--child", str(plan.checkpointing_batch), "on"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError((run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1])
    return {"batch": plan.checkpointing_batch, "checkpointing": True} | json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="CPU, the tiny preset at tiny sizes: checks the script")
    parser.add_argument("--budget-s", type=float, help="parts whose estimate does not fit the time left are skipped "
                        "(default 420 s; the dry run: no limit)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    device = torch.device("cpu" if args.dry_run else args.device)
    if device.type != "cuda" and not args.dry_run:
        parser.error("the suite measures a GPU; on a CPU use --dry-run")
    out = args.out or HERE / "results" / f"gpu_suite_{device.type}.json"
    budget_s = args.budget_s if args.budget_s is not None else (math.inf if args.dry_run else 420.0)
    suite = Suite(out, budget_s, plan, header(device, plan, args.dry_run))
    print(f"gpu suite: {plan.preset}, {plan.frames} x {plan.height} x {plan.width}, {plan.steps} steps, "
          f"{plan.dtype}, on {device}; budget {budget_s:.0f} s -> {out}", flush=True)

    samples = Samples(plan, device)
    base = samples.settings
    compiled, channels_last = dataclasses.replace(base, compile=plan.compile_backend), dataclasses.replace(
        base, channels_last=True)
    suite.part("reference", samples.reference)
    suite.part("memory", samples.memory)
    suite.part("sample/eager", lambda: samples.variant("eager", base))
    suite.part("sample/compile", lambda: samples.variant("compile", compiled))
    suite.part("sample/channels_last", lambda: samples.variant("channels_last", channels_last))
    suite.part("sample/diffusers-unet3d", lambda: samples.variant("diffusers-unet3d", base, samples.diffusers_unet()))
    train = suite.part("train_step", lambda: train_step_part(plan, device, compiled=False))
    suite.part("attention", lambda: attention_part(plan, device))
    suite.part("sample/compile+channels_last",
               lambda: samples.variant("compile+channels_last", dataclasses.replace(compiled, channels_last=True)))
    suite.part("train_checkpointing", lambda: checkpointing_part(plan, device))
    diffusers_s = train["diffusers"]["median_s"] if train else None
    suite.part("train_step_compiled", lambda: train_step_part(plan, device, compiled=True, diffusers_s=diffusers_s))
    mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs need CUDA
    suite.part("sample/compile-cudagraphs", lambda: samples.variant(
        "compile-cudagraphs", base, torch.compile(samples.ours, backend=plan.compile_backend, mode=mode)))
    suite.result["finished"] = True
    suite.write()
    print(f"done in {suite.result['elapsed_s']:.0f} s: {out}")


if __name__ == "__main__":
    main()
