"""Latent caching: encode a run's data once (VAE posterior moments + text embeddings), then train from disk.

The frozen VAE and text encoder cost as much as the UNet's forward at VideoCrafter2 sizes, and they
compute the same thing every epoch. A cache stores, per usable item, the posterior moments (mean and
log-variance, float16) and the caption's embedding; training samples ``mean + std * eps`` with the
item's own keyed noise, exactly as the uncached path does. What the cache fixes: each video
contributes the one clip (frame stride, start, crop) drawn when the cache was written.

    CACHE/
      cache.json                 format, model family, sizes, counts, skip report
      uncond.safetensors         the embedding of "" (caption dropout)
      videos/00000000.safetensors ...   moments (2z, t, h, w), context (L, d); metadata fps, source
      images/00000000.safetensors ...

Items are written to temporary names, flushed to the disk and renamed (:func:`vc2_core.files.write_atomically`);
``cache.json`` is written last, so an interrupted build is never mistaken for a complete cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..files import make_folder, write_atomically, write_text_atomically
from ..model import VideoCrafter
from ..text import TextEncoder
from ..vae import VideoVAE
from .batches import CachedSample
from .data import Sample, Skipped, SkipReport, draw_generator

Tensor = torch.Tensor
FORMAT = "vc2-latent-cache"


@dataclass(frozen=True)
class CachedItems:
    """A map-style dataset over one kind of a cache (the ItemStream contract: ``load(index, generator)``)."""

    folder: Path
    count: int

    def __len__(self) -> int:
        return self.count

    def load(self, index: int, generator: torch.Generator) -> CachedSample | Skipped:
        del generator  # a cached item is fixed
        path = self.folder / f"{index:08d}.safetensors"
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata()
                return CachedSample(handle.get_tensor("moments"), handle.get_tensor("context"), int(meta["fps"]),
                                    meta["source"])
        except FileNotFoundError:
            return Skipped(str(path), "missing")
        except (SafetensorError, OSError, KeyError, ValueError) as error:
            return Skipped(str(path), "unreadable", str(error).splitlines()[0] if str(error) else type(error).__name__)


@dataclass(frozen=True)
class LatentCache:
    root: Path
    info: dict

    @classmethod
    def open(cls, root: str | Path, config: ModelConfig) -> LatentCache:
        root = Path(root)
        index = root / "cache.json"
        if not index.is_file():
            raise ValueError(f"{root}: not a complete latent cache (no cache.json); build it with vc2 cache --config")
        info = json.loads(index.read_text())
        if info.get("format") != FORMAT:
            raise ValueError(f"{root}: cache.json is not a {FORMAT} index")
        if info["family"] != config.name or info["z_channels"] != config.vae.z_channels:
            raise ValueError(f"{root}: cached for {info['family']} (z={info['z_channels']}), but the model is "
                             f"{config.name} (z={config.vae.z_channels})")
        return cls(root, info)

    def count(self, kind: str) -> int:
        return self.info["kinds"].get(kind, {}).get("count", 0)

    def items(self, kind: str) -> CachedItems:
        return CachedItems(self.root / kind, self.count(kind))

    def uncond(self) -> Tensor:
        with safe_open(str(self.root / "uncond.safetensors"), framework="pt") as handle:
            return handle.get_tensor("context")


@dataclass(frozen=True)
class HeldItems:
    """Encoded samples held in memory, as an ItemSource: a latent cache of a few items (the ComfyUI node's)."""

    samples: list[CachedSample]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int, generator: torch.Generator) -> CachedSample:
        del generator  # an encoded item is fixed
        return self.samples[index]


@torch.no_grad()
def encode_sample(vae: VideoVAE, text_encoder: TextEncoder, sample: Sample) -> CachedSample:
    """A sample's posterior moments (2z, t, h, w) and caption embedding (L, d), float32 on the CPU; the networks
    run on their own device and dtype."""
    weight = next(vae.parameters())
    pixels = sample.pixels.unsqueeze(0).to(weight.device, weight.dtype)  # (1, 3, t, H, W)
    b, c, t, height, width = pixels.shape
    moments = vae.encode_moments(pixels.permute(0, 2, 1, 3, 4).reshape(t, c, height, width))  # (t, 2z, h, w)
    context = text_encoder.encode([sample.caption])[0]  # (L, d)
    return CachedSample(moments.transpose(0, 1).float().cpu(), context.float().cpu(), sample.fps, sample.source)


def build_cache(model: VideoCrafter, datasets: dict[str, object], root: str | Path, *, seed: int,
                device: torch.device | str = "cpu", show_progress: bool = True,
                report: SkipReport | None = None) -> dict:
    """Encode every usable item of ``datasets`` ({"videos": VideoClips, "images": Images}) into ``root``."""
    root = Path(root)
    if (root / "cache.json").exists():
        raise ValueError(f"{root}: a complete cache is already there; delete it or choose another data.cache")
    make_folder(root)
    device = torch.device(device)
    vae, text = model.vae.to(device).eval(), model.text_encoder.to(device).eval()
    report = report or SkipReport()
    kinds = {}
    with torch.no_grad():
        _save(root / "uncond.safetensors", {"context": text.encode([""])[0].float().cpu()}, {})
    for kind, dataset in datasets.items():
        folder = root / kind
        make_folder(folder)
        written, shape = 0, None
        for index in tqdm(range(len(dataset)), desc=f"cache {kind}", unit="item", disable=not show_progress):
            item = dataset.load(index, draw_generator(seed, index, f"cache/{kind}"))
            report.add(item)
            if isinstance(item, Skipped):
                continue
            encoded = encode_sample(vae, text, item)  # stored in float16
            _save(folder / f"{written:08d}.safetensors", {"moments": encoded.moments.half(),
                                                           "context": encoded.context.half()},
                  {"fps": str(item.fps), "source": item.source, "caption": item.caption})
            written, shape = written + 1, list(encoded.moments.shape)
        kinds[kind] = {"count": written, "moments_shape": shape}
    info = {"format": FORMAT, "family": model.config.name, "z_channels": model.config.vae.z_channels,
            "seed": seed, "kinds": kinds, "skipped": report.to_dict()}
    write_text_atomically(root / "cache.json", json.dumps(info, indent=1))
    return info


def _save(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    state = {k: v.contiguous() for k, v in tensors.items()}
    write_atomically(path, lambda temporary: save_file(state, temporary, metadata=metadata))
