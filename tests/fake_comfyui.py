"""Stand-ins for the ComfyUI modules the pack calls (nodes/comfy.py lists them), for tests without ComfyUI.

They follow ComfyUI's behaviour where the pack depends on it: folder_paths registers folders with
extension sets and lists files; a ModelPatcher's clone shares the module and keeps its own weight
patches, applied (``weight += strength * diff``) when it is loaded and undone when another clone of
the module loads; the progress bar's hook can cancel the run, as the server's hook does when the
user presses Cancel. The real server runs the same nodes in tools/comfy_e2e_vc2.sh.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import fake_comfy_model
import torch


class InterruptProcessingException(Exception):
    pass


class Interrupt:
    """``after`` progress updates, the next interrupt check raises (the user pressed Cancel)."""

    def __init__(self) -> None:
        self.after: int | None = None
        self.updates = 0

    def check(self) -> None:
        if self.after is not None and self.updates >= self.after:
            raise InterruptProcessingException()


class ModelPatcher:
    def __init__(self, model, load_device, offload_device):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        self.patches: dict[str, list[tuple[float, torch.Tensor]]] = {}

    def clone(self) -> ModelPatcher:
        twin = ModelPatcher(self.model, self.load_device, self.offload_device)
        twin.patches = {key: list(value) for key, value in self.patches.items()}
        return twin

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        state = self.model.state_dict()
        added = []
        for key, value in patches.items():
            if key in state:
                self.patches.setdefault(key, []).append((strength_patch, value[0]))
                added.append(key)
        return added

    def load(self) -> None:
        model = self.model
        owner = getattr(model, "_fake_patched_by", None)
        if owner is not self:
            with torch.no_grad():
                if owner is not None:  # undo the other clone's patches
                    for key, weight in model._fake_backup.items():
                        model.get_parameter(key).copy_(weight)
                model._fake_backup = {}
                for key, patches in self.patches.items():
                    weight = model.get_parameter(key)
                    model._fake_backup[key] = weight.detach().clone()
                    patched = weight.float()
                    for strength, diff in patches:
                        patched = patched + strength * diff.float()
                    weight.copy_(patched.to(weight.dtype))
            model._fake_patched_by = self
        model.to(self.load_device)


def install(monkeypatch, root: Path) -> types.SimpleNamespace:
    """Put the fake modules in sys.modules for one test; ``root`` holds models/, input/ and output/."""
    for name in ("models", "input", "output"):
        (root / name).mkdir(exist_ok=True)
    state = types.SimpleNamespace(progress=[], texts=[], previews=[], loads=0, interrupt=Interrupt(),
                                  preview_method="none")

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(root / "models")
    folder_paths.folder_names_and_paths = {"loras": ([str(root / "models" / "loras")], {".safetensors", ".pt"})}

    def add_model_folder_path(name, path, is_default=False):
        folder_paths.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path)

    def get_filename_list(name):
        paths, extensions = folder_paths.folder_names_and_paths[name]
        return sorted(p.name for folder in paths if os.path.isdir(folder) for p in Path(folder).iterdir()
                      if not extensions or p.suffix in extensions)

    def get_full_path(name, file):
        for folder in folder_paths.folder_names_and_paths[name][0]:
            if os.path.isfile(os.path.join(folder, file)):
                return os.path.join(folder, file)
        return None

    def get_save_image_path(prefix, output_dir, width=0, height=0):
        subfolder, stem = os.path.split(prefix)
        folder = os.path.join(output_dir, subfolder)
        os.makedirs(folder, exist_ok=True)
        counter = 1 + len([p for p in os.listdir(folder) if p.startswith(stem + "_")])
        return folder, stem, counter, subfolder, prefix

    folder_paths.add_model_folder_path = add_model_folder_path
    folder_paths.get_filename_list = get_filename_list
    folder_paths.get_full_path = get_full_path
    folder_paths.get_folder_paths = lambda name: folder_paths.folder_names_and_paths[name][0]
    folder_paths.get_save_image_path = get_save_image_path
    folder_paths.get_output_directory = lambda: str(root / "output")
    folder_paths.get_input_directory = lambda: str(root / "input")

    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    mm = types.ModuleType("comfy.model_management")
    cpu = torch.device("cpu")
    for name in ("get_torch_device", "unet_offload_device", "text_encoder_device", "text_encoder_offload_device",
                 "vae_device", "vae_offload_device", "intermediate_device"):
        setattr(mm, name, lambda: cpu)
    mm.InterruptProcessingException = InterruptProcessingException

    def load_models_gpu(patchers, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        assert force_full_load, "the pack's networks must be loaded whole"
        state.loads += 1
        for patcher in patchers:
            patcher.load()

    mm.load_models_gpu = load_models_gpu
    mm.unload_all_models = lambda: None
    mm.soft_empty_cache = lambda force=False: None
    mm.throw_exception_if_processing_interrupted = lambda: state.interrupt.check()
    model_patcher = types.ModuleType("comfy.model_patcher")
    model_patcher.ModelPatcher = ModelPatcher

    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            self.current = value
            state.progress.append((value, total if total is not None else self.total))
            if preview is not None:
                state.previews.append(preview)
            state.interrupt.updates += 1
            state.interrupt.check()  # the server's hook checks for Cancel on every update

    utils.ProgressBar = ProgressBar
    model_modules = fake_comfy_model.modules()  # comfy.model_base and the rest a model family builds on
    latent_formats = model_modules["comfy.latent_formats"]
    latent_preview = types.ModuleType("latent_preview")

    class Previewer:
        def decode_latent_to_preview_image(self, preview_format, x0):
            return (preview_format, tuple(x0.shape), 512)

    latent_preview.get_previewer = lambda device, latent_format: (
        Previewer() if state.preview_method != "none" and isinstance(latent_format, latent_formats.SD15) else None)

    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(
        send_progress_text=lambda text, node_id: state.texts.append((node_id, text))))

    comfy.model_management, comfy.model_patcher, comfy.utils = mm, model_patcher, utils
    vars(comfy).update({name.removeprefix("comfy."): module for name, module in model_modules.items()})
    modules = {"folder_paths": folder_paths, "comfy": comfy, "comfy.model_management": mm,
               "comfy.model_patcher": model_patcher, "comfy.utils": utils, "latent_preview": latent_preview,
               "server": server, **model_modules}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    state.folder_paths = folder_paths
    return state
