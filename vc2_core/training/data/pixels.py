"""Pixel operations on training media: scale to cover the target size, crop, map to [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
CROPS = ("center", "random")


def resize_crop(frames: np.ndarray, height: int, width: int, crop: str, generator: torch.Generator) -> Tensor:
    """uint8 frames (t, h, w, 3) -> float32 (3, t, height, width) in [-1, 1].

    Scaled (aspect kept, bilinear with antialiasing) to the smallest size covering the target, then cropped
    at the center or at an offset drawn from ``generator`` (``crop="random"``).
    """
    video = torch.from_numpy(np.require(frames, np.uint8, ["C", "W"])).permute(0, 3, 1, 2).float()  # (t, 3, h, w)
    h, w = video.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    if size != (h, w):
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    if crop == "random":
        top = int(torch.randint(0, size[0] - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, size[1] - width + 1, (1,), generator=generator))
    else:
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[:, :, top:top + height, left:left + width]
    return (video / 127.5 - 1.0).clamp(-1.0, 1.0).transpose(0, 1).contiguous()


def check_size(height: int, width: int, crop: str) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be at least 1; got {height}x{width}")
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}; got {crop!r}")
