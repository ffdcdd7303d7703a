"""Save IMAGE frames as a video file in ComfyUI's output folder, with the workflow embedded."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from ..vc2_core.video_io import write_video
from . import comfy

FORMATS = ("mp4", "webp", "gif")


class VC2SaveVideo:
    CATEGORY = "VideoCrafter2/video"
    DESCRIPTION = ("Writes the frames as one video (mp4 H.264, animated webp, or gif) into ComfyUI's output folder, "
                   "with the prompt and workflow embedded so dropping the file on ComfyUI reopens the graph. "
                   "ComfyUI's Create Video + Save Video work on the same frames too.")
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames from VC2 VAE Decode."}),
                "fps": ("FLOAT", {"default": 10.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                  "tooltip": "Playback rate of the file (the released script writes 10 fps; gif "
                                             "rounds to hundredths of a second per frame)."}),
                "format": (list(FORMATS), {"default": "mp4", "tooltip": "mp4 (H.264, crf 17), webp or gif."}),
                "filename_prefix": ("STRING", {"default": "VideoCrafter2/video",
                                               "tooltip": "Output name prefix, subfolders allowed."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, images, fps: float, format: str, filename_prefix: str, prompt=None, extra_pnginfo=None):
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
            raise ValueError(f"images: expected frames [N, H, W, 3]; got {tuple(images.shape)}")
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps {fps}: must be a positive number")
        if format not in FORMATS:
            raise ValueError(f"format {format!r}: choose one of {', '.join(FORMATS)}")
        frames = (images.float().clamp(0, 1) * 255).round().byte().cpu().numpy()  # (N, H, W, 3)
        if format == "mp4" and (frames.shape[1] % 2 or frames.shape[2] % 2):
            raise ValueError(f"mp4 (H.264) needs an even width and height; the frames are "
                             f"{frames.shape[2]}x{frames.shape[1]}: save as webp or gif")
        folder, start, subfolder = comfy.output_target(filename_prefix, frames.shape[2], frames.shape[1])
        name = f"{start}.{format}"
        write_video(os.path.join(folder, name), np.ascontiguousarray(frames), fps, _metadata(prompt, extra_pnginfo))
        return {"ui": {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                       "animated": (True,)}}


def _metadata(prompt: dict | None, extra_pnginfo: dict | None) -> dict[str, str]:
    """The prompt and workflow as ComfyUI's own save nodes embed them (absent with --disable-metadata)."""
    metadata = {}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata
