"""The inputs tests/test_bad_input.py and tests/test_bad_node_input.py try: a tiny checkpoint and LoRA, broken
copies of them, an image model's checkpoint, a LoRA of another family, folders, files, data and configs."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from tiny_media import make_images

from vc2_core.checkpoint import save_checkpoint
from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.random_weights import randomize_zero_initialized
from vc2_core.training.lora import inject_lora, save_lora

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes into read-only folders


def tree(folder: Path) -> list[str]:
    """Every path under ``folder``, relative to it, sorted: what a refused command must leave unchanged."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def make_bad_files(root: Path) -> dict[str, Path]:
    """Inputs good and bad in ``root``: a tiny checkpoint and LoRA, broken copies, a foreign file, folders, data."""
    torch.manual_seed(0)
    model = VideoCrafter(preset("tiny"))
    randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
    ckpt = save_checkpoint(model, root / "tiny.safetensors")
    inject_lora(model.unet, ["spatial"], rank=2)
    lora = save_lora(model.unet, root / "lora.safetensors", family="tiny", groups=["spatial"], rank=2, alpha=2.0,
                     targets="attention")
    save_lora(model.unet, root / "lora-vc2.safetensors", family="vc2-512", groups=["spatial"], rank=2, alpha=2.0,
              targets="attention")
    paths = {"ckpt": ckpt, "lora": lora, "lora_vc2": root / "lora-vc2.safetensors", "root": root}
    for name, source in (("trunc", ckpt), ("lora_trunc", lora)):
        data = source.read_bytes()
        paths[name] = root / f"{name}.safetensors"
        paths[name].write_bytes(data[: len(data) // 2])
    torch.save({"state_dict": {"x": torch.zeros(4)}}, root / "full.ckpt")
    paths["trunc_ckpt"] = root / "trunc.ckpt"
    paths["trunc_ckpt"].write_bytes((root / "full.ckpt").read_bytes()[:300])
    paths["junk"] = root / "junk.safetensors"
    paths["junk"].write_bytes(b"not a checkpoint " * 50)
    paths["empty"] = root / "empty.safetensors"
    paths["empty"].write_bytes(b"")
    paths["foreign"] = root / "sd15.safetensors"  # an image model's UNet key: not a VideoCrafter checkpoint
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, paths["foreign"])
    paths["folder"] = root / "folder.safetensors"
    paths["folder"].mkdir()
    paths["file"] = root / "plain.txt"
    paths["file"].write_text("a file, not a folder")
    paths["missing"] = root / "missing.safetensors"
    paths["readonly"] = root / "readonly"
    paths["readonly"].mkdir(mode=0o555)
    paths["images"] = make_images(root / "images", count=2, broken=False)
    paths["broken_images"] = root / "broken_images"
    paths["broken_images"].mkdir()
    for name in ("a", "b"):
        (paths["broken_images"] / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        (paths["broken_images"] / f"{name}.txt").write_text("a broken image")
    paths["empty_folder"] = root / "empty_folder"
    paths["empty_folder"].mkdir()
    for name, text in (("empty_csv", ""), ("header_csv", "path,caption\n"), ("bad_csv", "just one column\n\x00\x01")):
        paths[name] = root / f"{name}.csv"
        paths[name].write_text(text)
    for name, text in (("empty_yaml", ""), ("bad_yaml", "run: [unclosed"), ("list_yaml", "- a\n- b\n"),
                       ("unknown_yaml", "optimizer: {lr: 1}\n")):
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(text)
    paths["binary_yaml"] = root / "binary.yaml"
    paths["binary_yaml"].write_bytes(b"run:\n  seed: \xff\xfe\x00\n")
    paths["prompts_empty"] = root / "prompts_empty.txt"
    paths["prompts_empty"].write_text("\n  \n")
    paths["prompts_binary"] = root / "prompts.bin"
    paths["prompts_binary"].write_bytes(b"\xff\xfe\x00 not utf-8 \xc3")
    return paths
