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

Items are written to temporary names and renamed; ``cache.json`` is written last, so an
interrupted build is never mistaken for a complete cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..model import VideoCrafter
from .batches import CachedSample
from .data import Skipped, SkipReport, draw_generator

Tensor = torch.Tensor
FORMAT = "vc2-latent-cache"
KINDS = ("videos", "images")


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


def build_cache(model: VideoCrafter, datasets: dict[str, object], root: str | Path, *, seed: int,
                device: torch.device | str = "cpu", show_progress: bool = True,
                report: SkipReport | None = None) -> dict:
    """Encode every usable item of ``datasets`` ({"videos": VideoClips, "images": Images}) into ``root``."""
    root = Path(root)
    if (root / "cache.json").exists():
        raise ValueError(f"{root}: a complete cache is already there; delete it or choose another data.cache")
    root.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    vae, text = model.vae.to(device).eval(), model.text_encoder.to(device).eval()
    report = report or SkipReport()
    kinds = {}
    with torch.no_grad():
        _save(root / "uncond.safetensors", {"context": text.encode([""])[0].float().cpu()}, {})
        for kind, dataset in datasets.items():
            folder = root / kind
            folder.mkdir(exist_ok=True)
            written, shape = 0, None
            for index in tqdm(range(len(dataset)), desc=f"cache {kind}", unit="item", disable=not show_progress):
                item = dataset.load(index, draw_generator(seed, index, f"cache/{kind}"))
                report.add(item)
                if isinstance(item, Skipped):
                    continue
                pixels = item.pixels.unsqueeze(0).to(device, next(vae.parameters()).dtype)  # (1, 3, t, H, W)
                b, c, t, height, width = pixels.shape
                moments = vae.encode_moments(pixels.permute(0, 2, 1, 3, 4).reshape(t, c, height, width))
                moments = moments.transpose(0, 1).half().cpu()  # (2z, t, h, w)
                context = text.encode([item.caption])[0].half().cpu()  # (L, d)
                _save(folder / f"{written:08d}.safetensors", {"moments": moments, "context": context},
                      {"fps": str(item.fps), "source": item.source, "caption": item.caption})
                written, shape = written + 1, list(moments.shape)
            kinds[kind] = {"count": written, "moments_shape": shape}
    info = {"format": FORMAT, "family": model.config.name, "z_channels": model.config.vae.z_channels,
            "seed": seed, "kinds": kinds, "skipped": report.to_dict()}
    (root / "cache.json.tmp").write_text(json.dumps(info, indent=1))
    os.replace(root / "cache.json.tmp", root / "cache.json")
    return info


def _save(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary), metadata=metadata)
    os.replace(temporary, path)
