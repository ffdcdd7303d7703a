"""Context windows over the frame axis, for videos longer than the model was trained on.

The UNet sees ``length`` frames at a time; windows start every ``length - overlap`` frames (the
last window is moved back to end on the last frame), and the predictions of overlapping windows
are averaged with weights that fall towards a window's edges, so no seam shows where one window
hands over to the next. With ``loop`` the windows wrap around the end of the video, so its last
frames also blend into its first ones (for seamless loops).

A window that covers every frame is the plain, un-windowed call, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .steps import EpsFn

Tensor = torch.Tensor


@dataclass(frozen=True)
class ContextWindows:
    length: int  # frames per UNet call (the trained 16 for VideoCrafter2)
    overlap: int = 4  # frames shared by neighbouring windows
    loop: bool = False  # wrap windows around the end of the video

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"context window length must be >= 1; got {self.length}")
        if not 0 <= self.overlap < self.length:
            raise ValueError(f"context overlap must be in [0, {self.length - 1}] for windows of {self.length} "
                             f"frames; got {self.overlap}")

    def windows(self, num_frames: int) -> list[list[int]]:
        """Frame indices of each window, covering every frame at least once."""
        if num_frames <= self.length:
            return [list(range(num_frames))]
        stride = self.length - self.overlap
        if self.loop:
            starts = range(0, num_frames, stride)
            return [[(start + k) % num_frames for k in range(self.length)] for start in starts]
        starts = list(range(0, num_frames - self.length + 1, stride))
        if starts[-1] + self.length < num_frames:
            starts.append(num_frames - self.length)  # the last window ends on the last frame
        return [list(range(start, start + self.length)) for start in starts]

    def weights(self, device: torch.device | None = None) -> Tensor:
        """Per-frame blending weights of one window, (length,): a pyramid, highest in the middle, never 0."""
        ramp = torch.arange(1, self.length + 1, dtype=torch.float32, device=device)
        return torch.minimum(ramp, ramp.flip(0))


def windowed_eps(eps_fn: EpsFn, windows: ContextWindows) -> EpsFn:
    """An eps predictor that runs ``eps_fn`` on each context window and blends the overlaps."""

    def predict(x: Tensor, t: Tensor) -> Tensor:
        frames = x.shape[2]  # x: (b, c, t, h, w)
        groups = windows.windows(frames)
        if len(groups) == 1:
            return eps_fn(x, t)
        weights = windows.weights(x.device)
        total = torch.zeros_like(x)
        norm = torch.zeros(frames, device=x.device, dtype=x.dtype)
        for group in groups:
            index = torch.tensor(group, device=x.device)
            eps = eps_fn(x.index_select(2, index), t)  # (b, c, length, h, w)
            total.index_add_(2, index, eps * weights.view(1, 1, -1, 1, 1).to(eps.dtype))
            norm.index_add_(0, index, weights.to(norm.dtype))
        return total / norm.view(1, 1, -1, 1, 1)

    return predict
