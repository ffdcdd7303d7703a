"""Every use the pack makes of ComfyUI's own modules, in one place.

ComfyUI's modules (``comfy.*``, ``folder_paths``, ``server``, ``latent_preview``) exist only inside a
running ComfyUI, so each is imported inside the function that needs it: the pack imports
anywhere, and the tests stand in small fakes of exactly these calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

MODEL_FOLDER = "videocrafter"  # ComfyUI/models/videocrafter: checkpoints
LORA_FOLDER = "loras"  # ComfyUI/models/loras: LoRA files, shared with other packs
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")
LORA_EXTENSIONS = (".safetensors",)


# ---- files -------------------------------------------------------------------------------------------------


def register_model_folders() -> None:
    """Register models/videocrafter (extensions added to the existing set, so users' extra_model_paths
    entries are kept; a new folder name starts with an empty set, which would match every file)."""
    import folder_paths

    if MODEL_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))
    folder_paths.folder_names_and_paths[MODEL_FOLDER][1].update(CHECKPOINT_EXTENSIONS)


def model_files(folder: str) -> list[str]:
    import folder_paths

    register_model_folders()
    return folder_paths.get_filename_list(folder)


def full_path(folder: str, name: str) -> str:
    """The file's path, or FileNotFoundError naming the folder it was looked for in."""
    import folder_paths

    register_model_folders()
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise FileNotFoundError(f"{name!r} is not in ComfyUI/models/{folder} (nor in the extra paths configured "
                                f"for {folder!r}); put the file there and refresh")
    return path


def first_folder(folder: str) -> str:
    """The first configured directory of a model folder (where the pack writes new files), created if needed."""
    import folder_paths

    register_model_folders()
    path = folder_paths.get_folder_paths(folder)[0]
    os.makedirs(path, exist_ok=True)
    return path


def input_path(path: str) -> str:
    """A path as the user typed it; relative ones are inside ComfyUI's input folder."""
    import folder_paths

    return os.path.join(folder_paths.get_input_directory(), os.path.expanduser(path))


def output_target(prefix: str, width: int, height: int) -> tuple[str, str, str]:
    """(folder, file name start, subfolder) for a new output file, as ComfyUI's save nodes pick them."""
    import folder_paths

    folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(
        prefix, folder_paths.get_output_directory(), width, height)
    return folder, f"{stem}_{counter:05}_", subfolder


# ---- memory management ---------------------------------------------------------------------------------------


def patcher(module: torch.nn.Module, role: str):
    """``module`` under ComfyUI's memory management: a ModelPatcher whose load and offload devices are
    those ComfyUI chooses for ``role`` ("unet", "text_encoder" or "vae")."""
    import comfy.model_management as mm
    from comfy.model_patcher import ModelPatcher

    devices = {
        "unet": (mm.get_torch_device, mm.unet_offload_device),
        "text_encoder": (mm.text_encoder_device, mm.text_encoder_offload_device),
        "vae": (mm.vae_device, mm.vae_offload_device),
    }
    load_device, offload_device = (choose() for choose in devices[role])
    module.to(offload_device)
    return ModelPatcher(module, load_device=load_device, offload_device=offload_device)


def video_model_patcher(unet: torch.nn.Module, config, schedule, attention: str):
    """The UNet as a ComfyUI MODEL (nodes/comfy_native.py: ``patcher.model.diffusion_model`` is ``unet``) under
    a ModelPatcher with the "unet" role's devices: one patcher serves the pack's nodes and ComfyUI's."""
    from .comfy_native import VideoCrafterModel

    return patcher(VideoCrafterModel(unet, config, schedule, attention), "unet")


def load(patchers: list) -> None:
    """Move the networks to their load devices, whole (our modules are not ComfyUI's cast-on-the-fly
    layers, so a partial lowvram load would leave weights on two devices); ComfyUI unloads others first."""
    import comfy.model_management as mm

    mm.load_models_gpu(patchers, force_full_load=True)


def unload_all() -> None:
    """Move every model ComfyUI holds to its offload device (before training takes the accelerator)."""
    import comfy.model_management as mm

    mm.unload_all_models()


def free_cache() -> None:
    import comfy.model_management as mm

    mm.soft_empty_cache()


def intermediate_device() -> torch.device:
    """Where node outputs live between nodes (the CPU unless ComfyUI runs with --gpu-only)."""
    import comfy.model_management as mm

    return mm.intermediate_device()


# ---- progress, previews, interrupts --------------------------------------------------------------------------


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException when the user pressed Cancel."""
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


def progress_bar(total: int):
    """ComfyUI's progress bar (``update_absolute(value, total, preview)``); drawn on the running node."""
    import comfy.utils

    return comfy.utils.ProgressBar(total)


def latent_previewer(device: torch.device, channels: int) -> Callable[[torch.Tensor], object] | None:
    """A function of scaled latents (1, c, h, w) -> preview for the progress bar, per ComfyUI's
    --preview-method (None when previews are off). VideoCrafter's VAE is Stable Diffusion's, so SD's
    latent format (its RGB factors, or TAESD if installed) previews it."""
    if channels != 4:
        return None
    import comfy.latent_formats
    import latent_preview

    previewer = latent_preview.get_previewer(device, comfy.latent_formats.SD15())
    if previewer is None:
        return None
    return lambda latents: previewer.decode_latent_to_preview_image("JPEG", latents)


def show_text(text: str, node_id: str | None) -> None:
    """Text under the running node in the UI (ComfyUI's progress text)."""
    if node_id is None:
        return
    from server import PromptServer

    PromptServer.instance.send_progress_text(text, node_id)
