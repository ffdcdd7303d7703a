"""Spatial-only fine-tuning inside ComfyUI: VideoCrafter2's stage 2 on a handful of high-quality images.

The training copy of the UNet learns; the input model is left as ComfyUI cached it. The node only
drives the training package: images are encoded once as the trainer's latent cache encodes them
(:func:`vc2_core.training.latent_cache.encode_sample`), and ``vc2 train``'s loop and step run on them
(:mod:`vc2_core.training.in_memory`), with the trainer's defaults (AdamW, clipping, caption dropout,
LoRA alpha) and its keyed randomness, so a seed reproduces a run. The node adds ComfyUI's side as
loop hooks: Cancel between steps, the progress bar, numbered files, the LOSS_MAP output.
"""

from __future__ import annotations

import logging
import math
import os

import torch
from tqdm.auto import tqdm

from ..vc2_core.attention import attention_backend
from ..vc2_core.checkpoint import write_checkpoint
from ..vc2_core.model import official_state_dict
from ..vc2_core.modules import UNetModel
from ..vc2_core.training.checkpoints import write_stage_lora
from ..vc2_core.training.config import DataSection, OptimSection, StageSection
from ..vc2_core.training.data import Images, Sample, Skipped, draw_generator, read_image_index, resize_crop
from ..vc2_core.training.in_memory import in_memory_step
from ..vc2_core.training.latent_cache import encode_sample
from ..vc2_core.training.loop import Cadence, Hooks, Progress, run_loop
from ..vc2_core.training.lora import LoRAFile, lora_state_dict, lora_weight_deltas
from ..vc2_core.training.stages import Stage, get_stage, set_up_stage
from ..vc2_core.training.step import NonFinite, StepResult
from . import comfy
from .latent import check_size
from .lora import patched
from .types import MODEL_TYPE, TEXT_ENCODER_TYPE, VAE_TYPE, TextEncoderModel, VAEModel, VideoModel

Tensor = torch.Tensor
VARIANTS = {"F-Spa-DIR": "spa-dir", "F-Spa-LORA": "spa-lora"}


def gather_items(images: Tensor | None, caption: str, image_folder: str, height: int, width: int, fps: int,
                 seed: int) -> list[Sample]:
    """The training images at height x width (center crop), from an IMAGE batch with one caption and/or a folder
    of images with .txt captions; a clear ValueError when there are none or captions are missing."""
    items: list[Sample] = []
    if images is not None:
        if not caption.strip():
            raise ValueError("caption is missing: an IMAGE batch trains with the caption given in 'caption'")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: expected an IMAGE batch [N, H, W, 3]; got {tuple(images.shape)}")
        frames = (images.float().clamp(0, 1) * 255).round().byte().cpu().numpy()
        for index, frame in enumerate(frames):
            pixels = resize_crop(frame[None], height, width, "center", draw_generator(seed, index, "crop"))
            items.append(Sample(pixels, caption.strip(), fps, f"images[{index}]"))
    if image_folder.strip():
        items += _folder_items(comfy.input_path(image_folder.strip()), height, width, fps, seed)
    if not items:
        raise ValueError("no training images: connect an IMAGE batch (with a caption) or give image_folder")
    return items


def _folder_items(folder: str, height: int, width: int, fps: int, seed: int) -> list[Sample]:
    if not os.path.isdir(folder):
        raise ValueError(f"image_folder {folder!r} is not a folder")
    try:
        entries, skipped = read_image_index(folder)
    except ValueError as error:
        raise ValueError(f"image_folder {folder!r}: {error}. Each image needs a caption: a .txt file of the same "
                         "name beside it (photo.png + photo.txt)") from None
    dataset = Images(entries, height=height, width=width, crop="center", fps=fps)
    items, unreadable = [], []
    for index, entry in enumerate(entries):
        sample = dataset.load(index, draw_generator(seed, index, "crop"))
        if isinstance(sample, Skipped):
            unreadable.append(sample.source)
        else:
            items.append(sample)
    if not items:
        raise ValueError(f"image_folder {folder!r}: none of its {len(entries)} captioned images could be read "
                         f"(e.g. {unreadable[0]})")
    if skipped or unreadable:
        logging.warning("VC2 fine-tune: %d files of %s skipped (no caption or unreadable), %d images used",
                        len(skipped) + len(unreadable), folder, len(items))
    return items


def encode_items(items: list[Sample], clip: TextEncoderModel, vae: VAEModel) -> tuple[list, Tensor]:
    """Each item encoded as the trainer's latent cache encodes it, and the (1, L, d) embedding of ""."""
    comfy.load([clip.patcher, vae.patcher])
    encoder, network = clip.patcher.model, vae.patcher.model
    with torch.no_grad():
        uncond = encoder.encode([""]).float().cpu()  # (1, L, d)
    encoded = []
    for item in items:
        comfy.check_interrupt()
        encoded.append(encode_sample(network, encoder, item))
    return encoded, uncond


def trainable_copy(model: VideoModel) -> UNetModel:
    """A float32 copy of the (patched) UNet that autograd can train: ComfyUI runs nodes under inference mode,
    and tensors made there cannot be trained, so the copy is made outside it."""
    comfy.load([model.patcher])
    source = model.unet
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
        if steps < 1:
            raise ValueError(f"steps {steps}: must be at least 1")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate {learning_rate}: must be positive")
        section = StageSection(name=VARIANTS[variant], lora_rank=lora_rank)
        stage = get_stage(section.name)
        check_size(model, height, width)
        items = gather_items(images, caption, image_folder, height, width, model.config.fps, seed)
        folder = comfy.first_folder(comfy.LORA_FOLDER if stage.lora else comfy.MODEL_FOLDER)
        target = unique_path(folder, save_name, ".safetensors") if save_name.strip() else None

        # ComfyUI runs nodes under inference mode; autograd needs it off
        with torch.inference_mode(False), attention_backend(model.attention):
            encoded, uncond = encode_items(items, clip, vae)
            unet = trainable_copy(model)
            comfy.unload_all()  # only the training copy on the accelerator from here on
            device = model.patcher.load_device
            unet.to(device).train()
            unet.set_gradient_checkpointing(gradient_checkpointing)
            trainable = set_up_stage(unet, stage, section)
            train_step = in_memory_step(unet, model.schedule, vae.patcher.model, trainable, encoded, uncond,
                                        batch_size=batch_size, seed=seed, total_steps=steps,
                                        optim=OptimSection(lr=learning_rate), data=DataSection(), device=device)
            saver = _Saver(model, vae, clip, stage, section, unet, target)
            hooks = _NodeHooks(saver, steps, learning_rate, unique_id)
            try:
                run_loop(train_step, Progress(), steps, hooks, Cadence(save_every=save_every))
            finally:
                hooks.bar.close()
        unet.eval().requires_grad_(False)
        label = f"{variant} {steps} steps"
        if stage.lora:
            lora = LoRAFile(lora_state_dict(unet), model.config.name, tuple(stage.train), section.lora_rank,
                            section.alpha(), section.lora_targets)
            result = patched(model, lora_weight_deltas(lora), 1.0, label)
        else:
            dtype = next(model.unet.parameters()).dtype
            patcher = comfy.video_model_patcher(unet.to(dtype), model.config, model.schedule, model.attention)
            result = VideoModel(patcher, model.config, model.schedule, f"{model.name} + {label}", model.attention)
        comfy.free_cache()
        return (result, {"loss": hooks.losses})


class _Saver:
    """Writes the fine-tune's result to its numbered file (atomically): LoRA adapters, or a full checkpoint."""

    def __init__(self, model: VideoModel, vae: VAEModel, clip: TextEncoderModel, stage: Stage,
                 section: StageSection, unet: UNetModel, target: str | None):
        self.model, self.vae, self.clip, self.stage, self.section = model, vae, clip, stage, section
        self.unet, self.target = unet, target
        self.saved_step = 0

    def save(self, step: int) -> None:
        if self.target is None:
            return
        if self.stage.lora:
            write_stage_lora(self.unet, self.model.config.name, self.section, self.target)
        else:
            state = official_state_dict(self.model.schedule, self.unet.state_dict(), self.vae.patcher.model,
                                        self.clip.patcher.model)
            write_checkpoint(self.target, state, self.model.config)
        self.saved_step = step
        tqdm.write(f"VC2 {self.stage.name}: step {step} saved to {self.target}")


class _NodeHooks(Hooks):
    """ComfyUI around the loop: Cancel between steps, its progress bar and step text, the saves, the losses."""

    def __init__(self, saver: _Saver, steps: int, learning_rate: float, unique_id: str | None):
        self.saver, self.steps, self.learning_rate, self.unique_id = saver, steps, learning_rate, unique_id
        self.losses: list[float] = []
        self.diverged = False  # a non-finite loss stopped the run: its weights are not worth saving
        self.progress = comfy.progress_bar(steps)
        self.bar = tqdm(total=steps, desc=f"VC2 {saver.stage.name}", unit="step")

    def before_step(self, step: int) -> None:
        comfy.check_interrupt()

    def non_finite(self, step: int, bad: NonFinite) -> None:
        self.diverged = True
        raise FloatingPointError(f"step {step}: the loss is {bad.loss}; lower learning_rate "
                                 f"(now {self.learning_rate:g}); the diverged weights were not saved")

    def after_step(self, step: int, result: StepResult | NonFinite) -> None:
        self.losses.append(result.loss)
        self.progress.update_absolute(step, self.steps)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{result.loss:.4f}", refresh=False)
        comfy.show_text(f"step {step}/{self.steps}  loss {result.loss:.4f}", self.unique_id)

    def save(self, step: int) -> None:
        self.saver.save(step)

    def stopped(self, done: int) -> None:
        if done > self.saver.saved_step and not self.diverged:
            self.saver.save(done)  # a cancelled run keeps its last completed step
