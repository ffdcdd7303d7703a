"""The training loop, one for every driver: ``vc2 train`` (and through it the demo and the study) and the
ComfyUI fine-tune node. A driver builds a :class:`~vc2_core.training.step.TrainStep` and passes
:class:`Hooks` for what differs between them: progress display, interruption, non-finite losses,
validation and saving.

    while step < total:
        hooks.before_step(step + 1)               # ComfyUI: Cancel raises here
        result = train_step.run(step)             # one optimizer step (step.py)
        NaN/inf -> hooks.non_finite (raise: stop; return: the step is skipped)
        hooks.after_step(step, result)            # progress bars, logs
        every validate_every steps: hooks.validate(step)
        every save_every steps, and after the last: hooks.save(step)
    an exception on the way: hooks.stopped(steps done), then it propagates
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .step import NonFinite, StepResult, TrainStep


@dataclass
class Progress:
    """Where a run stands; written into each checkpoint and read back to resume."""

    step: int = 0  # optimizer steps done (skipped ones included)
    positions: dict[str, list[int]] = field(default_factory=dict)  # per data kind: each process's stream position
    reports: dict[str, list[dict]] = field(default_factory=dict)  # per data kind: each process's skip report
    skipped_steps: int = 0  # steps skipped for a non-finite loss


@dataclass(frozen=True)
class Cadence:
    save_every: int = 0  # 0: save after the last step only
    validate_every: int = 0  # 0: never


class Hooks:
    """What a driver does around the steps; each method does nothing unless a driver overrides it."""

    def before_step(self, step: int) -> None:
        """Step ``step`` (1-based) is about to run; raise to stop the run before it."""

    def non_finite(self, step: int, bad: NonFinite) -> None:
        """Step ``step`` found a non-finite loss and changed nothing: raise to stop, return to skip it."""

    def after_step(self, step: int, result: StepResult | NonFinite) -> None:
        """Step ``step`` is done (or skipped)."""

    def validate(self, step: int) -> None: ...

    def save(self, step: int) -> None: ...

    def stopped(self, done: int) -> None:
        """An exception (Cancel, an error) ends the run after ``done`` completed steps; it propagates after this."""


def run_loop(train_step: TrainStep, progress: Progress, total: int, hooks: Hooks, cadence: Cadence) -> None:
    """Run steps from ``progress.step`` up to ``total``, updating ``progress``."""
    try:
        while progress.step < total:
            hooks.before_step(progress.step + 1)
            result = train_step.run(progress.step)
            if isinstance(result, NonFinite):
                hooks.non_finite(progress.step + 1, result)
                progress.skipped_steps += 1
            progress.step += 1
            step = progress.step
            hooks.after_step(step, result)
            if cadence.validate_every and step % cadence.validate_every == 0:
                hooks.validate(step)
            if (cadence.save_every and step % cadence.save_every == 0) or step == total:
                hooks.save(step)
    except BaseException:
        hooks.stopped(progress.step)
        raise
