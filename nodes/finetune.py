"""Spatial-only fine-tuning inside ComfyUI: VideoCrafter2's stage 2 on a handful of high-quality images.

The training copy of the UNet learns; the input model is left as ComfyUI cached it. Images are
encoded once (VAE posterior moments and caption embeddings, like the trainer's latent cache), then
each step draws its batch, posterior sample, timestep, noise and caption dropout from generators
keyed by (seed, item, purpose), as ``vc2 train`` does, so a seed reproduces a run.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..vc2_core.attention import attention_backend
from ..vc2_core.checkpoint import write_checkpoint
from ..vc2_core.model import official_state_dict
from ..vc2_core.modules import UNetModel
from ..vc2_core.training.batches import BatchMaker, CachedSample
from ..vc2_core.training.data import (
    Images,
    ItemStream,
    Skipped,
    draw_generator,
    read_image_index,
    resize_crop,
    stable_seed,
)
from ..vc2_core.training.lora import LoRAFile, inject_lora, lora_state_dict, lora_weight_deltas, save_lora
from ..vc2_core.training.objective import UNCOND_PROB, diffusion_loss
from ..vc2_core.training.stages import apply_stage, get_stage
from . import comfy
from .latent import check_size
from .lora import patched
from .types import MODEL_TYPE, TEXT_ENCODER_TYPE, VAE_TYPE, TextEncoderModel, VAEModel, VideoModel

Tensor = torch.Tensor
VARIANTS = {"F-Spa-DIR": "spa-dir", "F-Spa-LORA": "spa-lora"}
BETAS, WEIGHT_DECAY, MAX_GRAD_NORM = (0.9, 0.999), 0.01, 0.5  # the training pipeline's defaults (docs/training.md)


@dataclass(frozen=True)
class _Item:
    pixels: Tensor  # (3, 1, H, W) in [-1, 1]
    caption: str
    source: str


class _Encoded:
    """Encoded items as a dataset for ItemStream (``load(index, generator)``)."""

    def __init__(self, samples: list[CachedSample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int, generator: torch.Generator) -> CachedSample:
        return self.samples[index]


def gather_items(images: Tensor | None, caption: str, image_folder: str, height: int, width: int,
                 seed: int) -> list[_Item]:
    """The training images at height x width (center crop), from an IMAGE batch with one caption and/or a folder
    of images with .txt captions; a clear ValueError when there are none or captions are missing."""
    items: list[_Item] = []
    if images is not None:
        if not caption.strip():
            raise ValueError("caption is missing: an IMAGE batch trains with the caption given in 'caption'")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: expected an IMAGE batch [N, H, W, 3]; got {tuple(images.shape)}")
        frames = (images.float().clamp(0, 1) * 255).round().byte().cpu().numpy()
        for index, frame in enumerate(frames):
            pixels = resize_crop(frame[None], height, width, "center", draw_generator(seed, index, "crop"))
            items.append(_Item(pixels, caption.strip(), f"images[{index}]"))
    if image_folder.strip():
        items += _folder_items(comfy.input_path(image_folder.strip()), height, width, seed)
    if not items:
        raise ValueError("no training images: connect an IMAGE batch (with a caption) or give image_folder")
    return items


def _folder_items(folder: str, height: int, width: int, seed: int) -> list[_Item]:
    if not os.path.isdir(folder):
        raise ValueError(f"image_folder {folder!r} is not a folder")
    try:
        entries, skipped = read_image_index(folder)
    except ValueError as error:
        raise ValueError(f"image_folder {folder!r}: {error}. Each image needs a caption: a .txt file of the same "
                         "name beside it (photo.png + photo.txt)") from None
    dataset = Images(entries, height=height, width=width, crop="center")
    items, unreadable = [], []
    for index, entry in enumerate(entries):
        sample = dataset.load(index, draw_generator(seed, index, "crop"))
        if isinstance(sample, Skipped):
            unreadable.append(sample.source)
        else:
            items.append(_Item(sample.pixels, sample.caption, sample.source))
    if not items:
        raise ValueError(f"image_folder {folder!r}: none of its {len(entries)} captioned images could be read "
                         f"(e.g. {unreadable[0]})")
    if skipped or unreadable:
        logging.warning("VC2 fine-tune: %d files of %s skipped (no caption or unreadable), %d images used",
                        len(skipped) + len(unreadable), folder, len(items))
    return items


def encode_items(items: list[_Item], clip: TextEncoderModel, vae: VAEModel,
                 fps: int) -> tuple[list[CachedSample], Tensor]:
    """Posterior moments (2z, 1, h, w) and caption embeddings (L, d) of each item, and the embedding of ""."""
    comfy.load([clip.patcher, vae.patcher])
    encoder, network = clip.patcher.model, vae.patcher.model
    vae_device, vae_dtype = vae.patcher.load_device, next(network.parameters()).dtype
    samples = []
    with torch.no_grad():
        contexts = encoder.encode([item.caption for item in items]).float().cpu()  # (n, L, d)
        uncond = encoder.encode([""]).float().cpu()  # (1, L, d)
        for item, context in zip(items, contexts):
            comfy.check_interrupt()
            moments = network.encode_moments(item.pixels[:, 0][None].to(vae_device, vae_dtype))  # (1, 2z, h, w)
            samples.append(CachedSample(moments[0, :, None].float().cpu(), context, fps, item.source))
    return samples, uncond


def trainable_copy(model: VideoModel) -> UNetModel:
    """A float32 copy of the (patched) UNet that autograd can train: ComfyUI runs nodes under inference mode,
    and tensors made there cannot be trained, so the copy is made outside it."""
    comfy.load([model.patcher])
    source = model.patcher.model
    with torch.inference_mode(False):
        state = {key: value.detach().to(torch.float32).clone() for key, value in source.state_dict().items()}
        with torch.device("meta"):
            unet = UNetModel(model.config.unet)
        unet.load_state_dict(state, strict=True, assign=True)
    return unet


def unique_path(folder: str, name: str, suffix: str) -> str:
    """``folder/name_00001.suffix``, the first number not taken (a run never overwrites an earlier file)."""
    stem = name.strip()
    if not stem or os.path.basename(stem) != stem or stem.startswith("."):
        raise ValueError(f"save_name {name!r}: give a plain file name without folders")
    for counter in range(1, 100000):
        path = os.path.join(folder, f"{stem}_{counter:05}{suffix}")
        if not os.path.exists(path):
            return path
    raise ValueError(f"save_name {name!r}: 99999 files of that name exist in {folder}")


class VC2SpatialFineTune:
    CATEGORY = "VideoCrafter2/training"
    DESCRIPTION = ("VideoCrafter2's stage 2: fine-tunes only the spatial modules of the video UNet on high-quality "
                   "images (F-Spa-DIR: the weights directly, the paper's choice; F-Spa-LORA: low-rank adapters), so "
                   "picture quality rises while every temporal tensor, and so the motion, stays as it was. Trains "
                   "with gradients inside ComfyUI; Cancel stops it and keeps what was saved (the state at the "
                   "cancel is saved too when save_name is set).")
    RETURN_TYPES = (MODEL_TYPE, "LOSS_MAP")
    RETURN_NAMES = ("model", "loss")
    OUTPUT_TOOLTIPS = ("The fine-tuned model (the input model is unchanged).",
                       "The loss of every step, for Plot Loss Graph.")
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "The video UNet to fine-tune (a fully trained base, as the paper "
                                                  "recommends: VideoCrafter2 itself)."}),
                "clip": (TEXT_ENCODER_TYPE, {"tooltip": "The checkpoint's text encoder (encodes the captions)."}),
                "vae": (VAE_TYPE, {"tooltip": "The checkpoint's VAE (encodes the images)."}),
                "variant": (list(VARIANTS), {"default": "F-Spa-DIR",
                                             "tooltip": "F-Spa-DIR: spatial weights directly (the paper's stage "
                                                        "2). F-Spa-LORA: LoRA adapters on the spatial attention."}),
                "steps": ("INT", {"default": 200, "min": 1, "max": 1000000, "tooltip": "Optimizer steps."}),
                "learning_rate": ("FLOAT", {"default": 5e-5, "min": 1e-8, "max": 1.0, "step": 1e-6,
                                            "round": 1e-8, "tooltip": "AdamW learning rate (the paper: 5e-5)."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 256, "tooltip": "Images per step."}),
                "width": ("INT", {"default": 512, "min": 8, "max": 4096, "step": 8,
                                  "tooltip": "Training width (images are resized and center-cropped)."}),
                "height": ("INT", {"default": 320, "min": 8, "max": 4096, "step": 8,
                                   "tooltip": "Training height (images are resized and center-cropped)."}),
                "lora_rank": ("INT", {"default": 4, "min": 1, "max": 1024,
                                      "tooltip": "Rank of the adapters (F-Spa-LORA only)."}),
                "gradient_checkpointing": ("BOOLEAN", {"default": True,
                                                       "tooltip": "Recompute activations in the backward pass: "
                                                                  "much less memory, about 30% slower."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Seed of the batches, timesteps and noise (a seed reproduces a run)."}),
                "save_name": ("STRING", {"default": "",
                                         "tooltip": "Empty: keep the result in memory only. Else saved as "
                                                    "models/videocrafter/NAME_00001.safetensors (F-Spa-DIR, a full "
                                                    "checkpoint) or models/loras/NAME_00001.safetensors (LoRA)."}),
                "save_every": ("INT", {"default": 0, "min": 0, "max": 1000000,
                                       "tooltip": "Also save every N steps (0: at the end only)."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Training images (all with the caption below)."}),
                "caption": ("STRING", {"multiline": True, "default": "",
                                       "tooltip": "The caption of the connected images."}),
                "image_folder": ("STRING", {"default": "",
                                            "tooltip": "A folder of images, each with a caption in a .txt file of "
                                                       "the same name (relative: inside ComfyUI/input)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def train(self, model: VideoModel, clip: TextEncoderModel, vae: VAEModel, variant: str, steps: int,
              learning_rate: float, batch_size: int, width: int, height: int, lora_rank: int,
              gradient_checkpointing: bool, seed: int, save_name: str, save_every: int,
              images: Tensor | None = None, caption: str = "", image_folder: str = "", unique_id: str | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        stage = get_stage(VARIANTS[variant])
        check_size(model, height, width)
        items = gather_items(images, caption, image_folder, height, width, seed)
        folder = comfy.first_folder(comfy.LORA_FOLDER if stage.lora else comfy.MODEL_FOLDER)
        target = unique_path(folder, save_name, ".safetensors") if save_name.strip() else None

        # ComfyUI runs nodes under inference mode; autograd needs it off
        with torch.inference_mode(False), attention_backend(model.attention):
            encoded, uncond = encode_items(items, clip, vae, fps=model.config.fps)
            unet = trainable_copy(model)
            comfy.unload_all()  # only the training copy on the accelerator from here on
            device = model.patcher.load_device
            unet.to(device).train()
            unet.set_gradient_checkpointing(gradient_checkpointing)
            if stage.lora:
                trainable = inject_lora(unet, stage.train, rank=lora_rank)
            else:
                trainable = apply_stage(unet, stage)
            run = _Run(model, vae, clip, stage, unet, trainable, encoded, uncond, seed, batch_size, learning_rate,
                       lora_rank, target, unique_id)
            losses = run.loop(steps, save_every)
        unet.eval().requires_grad_(False)
        label = f"{variant} {steps} steps"
        if stage.lora:
            result = patched(model, lora_weight_deltas(run.lora_file()), 1.0, label)
        else:
            dtype = next(model.patcher.model.parameters()).dtype
            result = VideoModel(comfy.patcher(unet.to(dtype), "unet"), model.config, model.schedule,
                                f"{model.name} + {label}", model.attention)
        comfy.free_cache()
        return (result, {"loss": losses})


class _Run:
    """The optimisation of one fine-tune (saving on cancel and every ``save_every`` steps)."""

    def __init__(self, model: VideoModel, vae: VAEModel, clip: TextEncoderModel, stage, unet: UNetModel,
                 trainable: list, encoded: list[CachedSample], uncond: Tensor, seed: int, batch_size: int,
                 learning_rate: float, lora_rank: int, target: str | None, unique_id: str | None):
        self.model, self.vae, self.clip, self.stage, self.unet = model, vae, clip, stage, unet
        self.seed, self.lora_rank, self.target, self.unique_id = seed, lora_rank, target, unique_id
        device = model.patcher.load_device
        self.params = [param for _, param in trainable]
        self.optimizer = torch.optim.AdamW(self.params, lr=learning_rate, betas=BETAS, weight_decay=WEIGHT_DECAY)
        self.stream = ItemStream(_Encoded(encoded), seed=seed, local_batch=batch_size)
        self.maker = BatchMaker(vae.patcher.model, None, model.schedule.num_timesteps, seed=seed,
                                caption_dropout=UNCOND_PROB, uncond=uncond, device=device)
        self.device = device
        self.saved_step = 0

    def loop(self, steps: int, save_every: int) -> list[float]:
        losses: list[float] = []
        progress = comfy.progress_bar(steps)
        bar = tqdm(total=steps, desc=f"VC2 {self.stage.name}", unit="step")
        try:
            for step in range(1, steps + 1):
                comfy.check_interrupt()
                losses.append(self._step(step))
                progress.update_absolute(step, steps)
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
                comfy.show_text(f"step {step}/{steps}  loss {losses[-1]:.4f}", self.unique_id)
                if self.target and save_every and step % save_every == 0:
                    self.save(step)
        except BaseException:
            if self.target and len(losses) > self.saved_step:
                self.save(len(losses))  # a cancelled run keeps its last completed step
            raise
        finally:
            bar.close()
        if self.target and self.saved_step != steps:
            self.save(steps)
        return losses

    def _step(self, step: int) -> float:
        batch = self.maker.from_cache("images", self.stream.next_batch())
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(stable_seed(self.seed, "dropout", step))  # the temporal convs' dropout
            loss = diffusion_loss(self.unet, self.model.schedule, batch.latents, batch.context, batch.fps, None,
                                  timesteps=batch.timesteps, noise=batch.noise)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"step {step}: the loss is {loss.item()}; lower learning_rate "
                                     f"(now {self.optimizer.param_groups[0]['lr']:g})")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def lora_file(self) -> LoRAFile:
        return LoRAFile(lora_state_dict(self.unet), self.model.config.name, tuple(self.stage.train),
                        self.lora_rank, float(self.lora_rank), "attention")

    def save(self, step: int) -> None:
        if self.stage.lora:
            save_lora(self.unet, self.target, family=self.model.config.name, groups=self.stage.train,
                      rank=self.lora_rank, alpha=float(self.lora_rank), targets="attention")
        else:
            state = official_state_dict(self.model.schedule, self.unet.state_dict(), self.vae.patcher.model,
                                        self.clip.patcher.model)
            write_checkpoint(self.target, state, self.model.config)
        self.saved_step = step
        tqdm.write(f"VC2 {self.stage.name}: step {step} saved to {self.target}")

