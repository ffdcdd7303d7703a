"""What ``vc2 train`` does around the loop's steps: a progress bar, logs, validation videos, checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..files import make_folder
from ..model import VideoCrafter
from ..pipeline import GenerationSettings, generate
from ..video_io import to_frames, write_video
from . import run_dir
from .checkpoints import save_run_checkpoint
from .config import TrainConfig
from .loop import Hooks, Progress
from .step import NonFinite, StepResult, TrainStep


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite and the config says to stop."""


class RunHooks(Hooks):
    def __init__(self, accelerator, config: TrainConfig, model: VideoCrafter, train_step: TrainStep,
                 progress: Progress, out: Path, show_progress: bool):
        self.accelerator, self.config, self.model, self.train_step = accelerator, config, model, train_step
        self.progress, self.out = progress, out
        self.last_checkpoint = run_dir.latest_checkpoint(out)
        self.last_loss = float("nan")
        self.bar = tqdm(total=config.run.max_steps, initial=progress.step, desc="train", unit="step",
                        disable=not (show_progress and accelerator.is_main_process), dynamic_ncols=True)
        self._step_started = time.perf_counter()

    def close(self) -> None:
        self.bar.close()

    def before_step(self, step: int) -> None:
        self._step_started = time.perf_counter()

    def non_finite(self, step: int, bad: NonFinite) -> None:
        if self.config.run.nan == "skip":
            self.bar.write(f"step {step}: non-finite loss, step skipped (run.nan: skip)")
            return
        last = self.last_checkpoint
        raise NonFiniteLoss(
            f"the loss is {bad.loss} at step {step} (a {bad.kind} batch, item keys {bad.keys} on this process; "
            f"possibly another process). Stopped without saving: the last good checkpoint is "
            f"{last if last else 'none (no checkpoint was written yet)'}. Resume from it with --resume auto after "
            "lowering optim.lr, enabling optim.max_grad_norm or using bf16 instead of fp16; or set run.nan: skip "
            "to skip such steps.")

    def after_step(self, step: int, result: StepResult | NonFinite) -> None:
        if isinstance(result, StepResult):
            self.last_loss = result.loss
            lr = self.train_step.lr()
            self.bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            if step % self.config.log.every == 0 or step == self.config.run.max_steps:
                self._log(step, result, lr, time.perf_counter() - self._step_started)
        self.bar.update(1)

    def _log(self, step: int, result: StepResult, lr: float, seconds: float) -> None:
        values = {"loss": result.loss, "lr": lr, "step_seconds": seconds}
        if not math.isnan(result.grad_norm):
            values["grad_norm"] = result.grad_norm
        self.accelerator.log(values, step=step)
        if self.accelerator.is_main_process:
            with (self.out / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps({"step": step, "kind": result.kinds, **values}) + "\n")

    def validate(self, step: int) -> None:
        accelerator, model, ema = self.accelerator, self.model, self.train_step.optimisation.ema
        if accelerator.is_main_process:
            val = self.config.validation
            settings = GenerationSettings(height=val.height, width=val.width, frames=val.frames, fps=val.fps,
                                          steps=val.steps, cfg=val.cfg, sampler=val.sampler, eta=val.eta)
            seeds = list(val.seeds) or list(range(len(val.prompts)))
            folder = self.out / "samples" / run_dir.checkpoint_name(step)
            make_folder(folder)
            model.unet.eval()
            try:
                with ema.swapped_in() if ema is not None else contextlib.nullcontext():
                    videos = generate(model, list(val.prompts), seeds, settings, device=accelerator.device,
                                      offload=False)
            finally:
                model.unet.train()
            fps = settings.resolve(model.config).fps
            for index, (prompt, video) in enumerate(zip(val.prompts, videos)):
                write_video(folder / f"{index:02d}-{_slug(prompt)}.mp4", to_frames(video), fps)
        accelerator.wait_for_everyone()

    def save(self, step: int) -> None:
        self.last_checkpoint = save_run_checkpoint(self.accelerator, self.config, self.model, self.train_step,
                                                   self.progress, self.out)


def _slug(text: str, limit: int = 40) -> str:
    words = "".join(c if c.isalnum() else "-" for c in text.lower()).split("-")
    return "-".join(w for w in words if w)[:limit] or "prompt"
