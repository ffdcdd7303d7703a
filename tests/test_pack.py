"""The ComfyUI pack: imports the way ComfyUI imports a custom node folder; vc2_core needs no ComfyUI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import torch

from vc2_core.config import preset
from vc2_core.model import VideoCrafter

REPO = Path(__file__).resolve().parents[1]


def load_pack(name: str = "vc2_pack_under_test"):
    """What ComfyUI's load_custom_node does with a folder: import its __init__.py as a package."""
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fake_folder_paths(models_dir: Path) -> types.ModuleType:
    """The part of ComfyUI's folder_paths the loader uses, over a temporary models directory."""
    module = types.ModuleType("folder_paths")
    module.models_dir = str(models_dir)
    module.folder_names_and_paths = {}

    def add_model_folder_path(name, path, is_default=False):
        module.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path)

    def get_filename_list(name):
        paths, extensions = module.folder_names_and_paths[name]
        return sorted(p.name for folder in paths for p in Path(folder).glob("*") if p.suffix in extensions)

    module.add_model_folder_path = add_model_folder_path
    module.get_filename_list = get_filename_list
    module.get_full_path_or_raise = lambda name, file: str(Path(module.folder_names_and_paths[name][0][0]) / file)
    return module


def test_core_imports_without_comfyui():
    code = ("import sys, vc2_core.checkpoint, vc2_core.cli, vc2_core.model; "
            "assert not any(m.split('.')[0] in ('comfy', 'folder_paths', 'nodes') for m in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_pack_exports_prefixed_nodes_with_valid_schemas(tmp_path, monkeypatch):
    pack = load_pack()
    assert set(pack.__all__) == {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"}
    monkeypatch.setitem(sys.modules, "folder_paths", fake_folder_paths(tmp_path))
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("VC2_") and node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
        assert cls.CATEGORY.startswith("VideoCrafter2/") and callable(getattr(cls, cls.FUNCTION))
        inputs = cls.INPUT_TYPES()["required"]
        assert all("tooltip" in options for _, options in inputs.values())
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)


def test_loader_node_loads_a_checkpoint_from_models_videocrafter(tmp_path, monkeypatch):
    from vc2_core.checkpoint import save_checkpoint

    folder = tmp_path / "videocrafter"
    folder.mkdir()
    torch.manual_seed(0)
    save_checkpoint(VideoCrafter(preset("tiny")), folder / "tiny.safetensors")
    (folder / "readme.txt").write_text("not a model")
    monkeypatch.setitem(sys.modules, "folder_paths", fake_folder_paths(tmp_path))
    loader = load_pack().NODE_CLASS_MAPPINGS["VC2_CheckpointLoader"]
    assert loader.INPUT_TYPES()["required"]["ckpt_name"][0] == ["tiny.safetensors"]
    (model,) = loader().load("tiny.safetensors", "bf16", "math")
    assert model.config.name == "tiny" and next(model.unet.parameters()).dtype == torch.bfloat16
    assert {layer.backend for layer in model.unet.modules() if hasattr(layer, "backend")} == {"math"}
