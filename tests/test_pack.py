"""The ComfyUI pack: imports the way ComfyUI imports a custom node folder, node schemas, and every node run
end to end on a tiny random checkpoint, with fakes of the ComfyUI calls the pack makes (tests/fake_comfyui.py)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path

import fake_comfyui
import numpy as np
import pytest
import torch
from PIL import Image

from vc2_core.attention import attention_backend
from vc2_core.checkpoint import load_checkpoint, save_checkpoint
from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.parameter_groups import Group
from vc2_core.pipeline import GenerationSettings, generate
from vc2_core.random_weights import randomize_zero_initialized
from vc2_core.video_io import read_video

REPO = Path(__file__).resolve().parents[1]
PACK = "vc2_pack_under_test"


def load_pack(name: str = PACK):
    """What ComfyUI's load_custom_node does with a folder: import its __init__.py as a package."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def node(node_id: str):
    return load_pack().NODE_CLASS_MAPPINGS[node_id]()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = VideoCrafter(preset("tiny"))
    randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture
def comfy(tmp_path, monkeypatch, tiny_file):
    state = fake_comfyui.install(monkeypatch, tmp_path)
    folder = tmp_path / "models" / "videocrafter"
    folder.mkdir()
    (folder / "tiny.safetensors").symlink_to(tiny_file)
    (folder / "notes.txt").write_text("not a model")
    (tmp_path / "models" / "loras").mkdir()
    state.root = tmp_path
    return state


def load_tiny(dtype: str = "fp32", attention: str = "sdpa"):
    return node("VC2_CheckpointLoader").load("tiny.safetensors", dtype, attention)[:3]  # (+ the ComfyUI MODEL)


def encode(clip, text: str):
    return node("VC2_TextEncode").encode(clip, text)[0]


def sample(model, clip, steps=3, frames=4, height=32, width=48, batch=1, seed=7, **options):
    latent = node("VC2_EmptyVideoLatent").make(model, width, height, frames, batch)[0]
    settings = dict(seed=seed, steps=steps, cfg=7.5, eta=1.0, fps=8, sampler_name="ddim", context_frames=0,
                    context_overlap=4, context_loop=False)
    settings.update(options)
    return node("VC2_Sampler").sample(model, encode(clip, "a red ball rolls"), encode(clip, ""), latent,
                                      **settings)[0]


# ---- import and schemas ------------------------------------------------------------------------------------


def test_core_imports_without_comfyui():
    code = ("import sys, vc2_core.checkpoint, vc2_core.cli, vc2_core.model; "
            "assert not any(m.split('.')[0] in ('comfy', 'folder_paths', 'nodes') for m in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_pack_imports_without_comfyui_and_touches_nothing():
    init, root = str(REPO / "__init__.py"), str(REPO)
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('pack', {init!r}, "
            f"submodule_search_locations=[{root!r}]); m = importlib.util.module_from_spec(spec); "
            "sys.modules['pack'] = m; spec.loader.exec_module(m); "
            "assert not any(n.split('.')[0] in ('comfy', 'folder_paths', 'server') for n in sys.modules); "
            "print(len(m.NODE_CLASS_MAPPINGS))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 13


def _check_option(name: str, spec: tuple) -> None:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    assert isinstance(options.get("tooltip"), str) and options["tooltip"], f"{name}: no tooltip"
    if isinstance(kind, list):
        assert all(isinstance(v, str) for v in kind)
        assert "default" not in options or options["default"] in kind, name
    elif kind in ("INT", "FLOAT"):
        assert options["min"] <= options["default"] <= options["max"], name
    elif kind == "BOOLEAN":
        assert isinstance(options["default"], bool), name
    else:
        assert isinstance(kind, str) and kind.isupper(), name


def test_every_node_schema_is_valid(comfy):
    pack = load_pack()
    assert set(pack.__all__) == {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"}
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("VC2_") and cls.CATEGORY.startswith("VideoCrafter2/"), node_id
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40, node_id
        schema = cls.INPUT_TYPES()
        assert set(schema) <= {"required", "optional", "hidden"}, node_id
        for section in ("required", "optional"):
            for name, spec in schema.get(section, {}).items():
                _check_option(f"{node_id}.{name}", spec)
        outputs = len(cls.RETURN_TYPES)
        assert outputs == len(getattr(cls, "RETURN_NAMES", ())) == len(getattr(cls, "OUTPUT_TOOLTIPS", ()))
        assert cls.RETURN_TYPES or getattr(cls, "OUTPUT_NODE", False), node_id
        # the function takes exactly the inputs ComfyUI passes: required ones without defaults, the others with
        parameters = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        names = [n for n in parameters if n != "self"]
        expected = [n for section in ("required", "optional", "hidden") for n in schema.get(section, {})]
        assert sorted(names) == sorted(expected), node_id
        for name in schema.get("optional", {}) | schema.get("hidden", {}):
            assert parameters[name].default is not inspect.Parameter.empty, f"{node_id}.{name}"
        for name in schema["required"]:
            assert parameters[name].default is inspect.Parameter.empty, f"{node_id}.{name}"


def test_loader_lists_models_videocrafter_and_keeps_users_extra_paths(comfy, tmp_path):
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    (extra / "vc2.ckpt").write_bytes(b"")
    comfy.folder_paths.folder_names_and_paths["videocrafter"] = ([str(extra)], set())  # extra_model_paths.yaml
    files = load_pack().NODE_CLASS_MAPPINGS["VC2_CheckpointLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert files == ["vc2.ckpt"]  # the user's folder kept, extensions added (notes.txt would match an empty set)
    comfy.folder_paths.folder_names_and_paths["videocrafter"][0].append(str(tmp_path / "models" / "videocrafter"))
    files = load_pack().NODE_CLASS_MAPPINGS["VC2_CheckpointLoader"].INPUT_TYPES()["required"]["ckpt_name"][0]
    assert sorted(files) == ["tiny.safetensors", "vc2.ckpt"]


# ---- text -> latent -> frames -> file ----------------------------------------------------------------------


def test_nodes_reproduce_the_library_pipeline(comfy, tiny_file):
    model, clip, vae = load_tiny()
    assert model.unet.training is False and model.config.name == "tiny"
    latent = sample(model, clip, steps=3, seed=7)
    assert latent["samples"].shape == (1, 4, 4, 16, 24)
    images = node("VC2_VAEDecode").decode(vae, latent, 2)[0]
    assert images.shape == (4, 32, 48, 3) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1

    reference, _ = load_checkpoint(tiny_file)
    settings = GenerationSettings(height=32, width=48, frames=4, fps=8, steps=3, cfg=7.5, eta=1.0)
    with attention_backend("sdpa"):
        video = generate(reference, ["a red ball rolls"], [7], settings)  # (1, 3, t, H, W) in [-1, 1]
    expected = ((video[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    assert torch.allclose(images, expected, atol=1e-5), (images - expected).abs().max()


def test_the_loader_attention_input_reaches_the_sampler(comfy):
    model, clip, vae = load_tiny(attention="xformers")
    assert model.attention == "xformers"
    with pytest.raises(RuntimeError, match="attention backend 'xformers' cannot run here"):
        sample(model, clip, steps=1)  # the sampler runs the UNet under the model's backend (xformers: CUDA only)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="attention backend 'xformers' cannot run here"):
        node("VC2_SpatialFineTune").train(**_finetune_options(model, clip, vae, save_name=""))  # so does training
    with pytest.raises(ValueError, match="unknown attention backend 'flash9'"):
        load_tiny(attention="flash9")


def test_save_video_writes_decodable_files_with_the_workflow(comfy):
    model, clip, vae = load_tiny()
    images = node("VC2_VAEDecode").decode(vae, sample(model, clip, steps=2), 1)[0]
    prompt, workflow = {"1": {"class_type": "VC2_Sampler", "inputs": {}}}, {"nodes": [], "links": []}
    for kind in ("mp4", "webp", "gif"):
        ui = node("VC2_SaveVideo").save(images, 8.0, kind, "vc2/test", prompt=prompt,
                                        extra_pnginfo={"workflow": workflow})["ui"]
        entry = ui["images"][0]
        path = comfy.root / "output" / entry["subfolder"] / entry["filename"]
        frames, fps = read_video(path)
        assert frames.shape == (4, 32, 48, 3) and ui["animated"] == (True,)
        assert abs(fps - 8.0) < 0.5, (kind, fps)
        if kind == "webp":
            assert json.loads(Image.open(path).getexif()[0x0110].removeprefix("prompt:")) == prompt
        if kind == "gif":
            assert json.loads(json.loads(Image.open(path).info["comment"])["workflow"]) == workflow
    names = sorted(p.name for p in (comfy.root / "output" / "vc2").iterdir())
    assert len(names) == 3 and not any(name.startswith(".") for name in names)  # nothing half-written left


def test_sampler_batch_seeds_context_windows_and_preview(comfy):
    model, clip, _ = load_tiny()
    comfy.preview_method = "auto"
    pair = sample(model, clip, steps=2, batch=2, seed=3)["samples"]
    single = sample(model, clip, steps=2, batch=1, seed=4)["samples"]
    # video i of a batch is seed + i (up to batch-size-dependent float rounding; another seed is ~1x away)
    assert (pair[1] - single[0]).abs().max() < 1e-4 * single.abs().max()
    assert comfy.progress[-2:] == [(1, 2), (2, 2)]
    assert comfy.previews[-1] == ("JPEG", (1, 4, 16, 4 * 24), 512)  # four frames side by side
    windowed = sample(model, clip, steps=2, frames=8, seed=5, context_frames=4, context_overlap=2)["samples"]
    assert windowed.shape == (1, 4, 8, 16, 24) and torch.isfinite(windowed).all()
    plain = sample(model, clip, steps=2, frames=8, seed=5)["samples"]
    assert (windowed - plain).abs().max() > 1e-4  # the windows were used (the UNet saw 4 frames at a time)
    whole = sample(model, clip, steps=2, frames=4, seed=5)["samples"]
    covered = sample(model, clip, steps=2, frames=4, seed=5, context_frames=4, context_overlap=1)["samples"]
    assert torch.equal(covered, whole)  # one window covering every frame is plain sampling


def test_sampler_accepts_comfyui_conditioning_of_the_right_width_only(comfy):
    model, clip, _ = load_tiny()
    latent = node("VC2_EmptyVideoLatent").make(model, 48, 32, 4, 1)[0]
    options = dict(seed=1, steps=1, cfg=7.5, eta=1.0, fps=8, sampler_name="ddim", context_frames=0,
                   context_overlap=4, context_loop=False)
    long_prompt = [[torch.randn(1, 154, 32), {"pooled_output": torch.randn(1, 32)}]]  # CLIP Text Encode, 2 chunks
    out = node("VC2_Sampler").sample(model, long_prompt, encode(clip, ""), latent, **options)[0]
    assert out["samples"].shape == (1, 4, 4, 16, 24) and torch.isfinite(out["samples"]).all()
    sd15 = [[torch.randn(1, 77, 768), {}]]
    with pytest.raises(ValueError, match="width 32.*CLIP Text Encode"):
        node("VC2_Sampler").sample(model, sd15, encode(clip, ""), latent, **options)
    with pytest.raises(ValueError, match="combined"):
        node("VC2_Sampler").sample(model, encode(clip, "a") + encode(clip, "b"), encode(clip, ""), latent, **options)


def test_sampler_stops_on_cancel(comfy):
    model, clip, _ = load_tiny()
    comfy.interrupt.after = 1
    with pytest.raises(fake_comfyui.InterruptProcessingException):
        sample(model, clip, steps=20)
    assert [value for value, _ in comfy.progress] == [1]  # stopped after the first step


# ---- bad input -------------------------------------------------------------------------------------------


def test_bad_input_gives_clear_errors(comfy, tmp_path):
    loader = node("VC2_CheckpointLoader")
    with pytest.raises(FileNotFoundError, match="missing.safetensors.*models/videocrafter"):
        loader.load("missing.safetensors", "fp32", "sdpa")
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.conv.weight": torch.zeros(2)},
              str(comfy.root / "models" / "videocrafter" / "sd15.safetensors"))
    with pytest.raises(ValueError, match="sd15.safetensors is not a VideoCrafter checkpoint"):
        loader.load("sd15.safetensors", "fp32", "sdpa")
    model, clip, vae = load_tiny()
    with pytest.raises(ValueError, match="height 30: must be a positive multiple of 4 .*nearest is 32"):
        node("VC2_EmptyVideoLatent").make(model, 48, 30, 4, 1)
    finetune = node("VC2_SpatialFineTune")
    base = dict(model=model, clip=clip, vae=vae, variant="F-Spa-DIR", steps=1, learning_rate=1e-4, batch_size=1,
                width=32, height=32, lora_rank=4, gradient_checkpointing=False, seed=0, save_name="", save_every=0)
    with pytest.raises(ValueError, match="no training images"):
        finetune.train(**base)
    with pytest.raises(ValueError, match="caption is missing"):
        finetune.train(**base, images=torch.rand(2, 40, 40, 3), caption="  ")
    empty = comfy.root / "input" / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="image_folder 'empty'|image_folder .*empty"):
        finetune.train(**base, image_folder="empty")
    uncaptioned = comfy.root / "input" / "uncaptioned"
    uncaptioned.mkdir()
    Image.new("RGB", (40, 40), "red").save(uncaptioned / "a.png")
    with pytest.raises(ValueError, match=r"\.txt"):
        finetune.train(**base, image_folder="uncaptioned")
    with pytest.raises(ValueError, match="save_name"):
        finetune.train(**{**base, "save_name": "../escape"}, images=torch.rand(1, 40, 40, 3), caption="x")


# ---- spatial-only fine-tuning and LoRA -------------------------------------------------------------------------


def _groups(unet) -> dict[str, Group]:
    """Parameter groups by name (the pack's own copy of vc2_core built the UNet, so its classes classify it)."""
    groups = importlib.import_module(f"{PACK}.vc2_core.parameter_groups")
    return {name: Group(info.group.value) for name, info in groups.classify_unet_parameters(unet).items()}


def _state(patcher) -> dict[str, torch.Tensor]:
    fake_comfyui.ModelPatcher.load(patcher)
    return {k: v.detach().clone() for k, v in patcher.model.diffusion_model.state_dict().items()}


def _finetune_options(model, clip, vae, **changes):
    options = dict(model=model, clip=clip, vae=vae, variant="F-Spa-DIR", steps=3, learning_rate=1e-3, batch_size=2,
                   width=32, height=32, lora_rank=4, gradient_checkpointing=True, seed=0, save_name="ft",
                   save_every=0, images=torch.rand(3, 40, 56, 3, generator=torch.Generator().manual_seed(0)),
                   caption="a sharp photo of a red ball")
    options.update(changes)
    return options


def test_spatial_finetune_changes_only_spatial_tensors_inside_inference_mode(comfy):
    model, clip, vae = load_tiny()
    before = _state(model.patcher)
    with torch.inference_mode():  # ComfyUI executes every node under inference mode
        tuned, loss = node("VC2_SpatialFineTune").train(**_finetune_options(model, clip, vae, unique_id="9"))
    assert len(loss["loss"]) == 3 and all(np.isfinite(loss["loss"]))
    after = _state(tuned.patcher)
    groups = _groups(tuned.unet)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(groups[k] == Group.SPATIAL for k in changed)
    assert all(torch.equal(before[k], after[k]) for k in before if groups[k] != Group.SPATIAL)
    assert all(torch.equal(before[k], v) for k, v in _state(model.patcher).items())  # the input is untouched
    saved = comfy.root / "models" / "videocrafter" / "ft_00001.safetensors"
    reloaded, _ = load_checkpoint(saved)
    assert all(torch.equal(v, after[k]) for k, v in reloaded.unet.state_dict().items())
    # each step's loss under the running node (ComfyUI's progress text), the values of the LOSS_MAP
    assert comfy.texts == [("9", f"step {i}/3  loss {value:.4f}") for i, value in enumerate(loss["loss"], 1)]
    assert comfy.progress[-1] == (3, 3)
    # the fine-tuned model samples, with its own weights
    tuned_latent = sample(tuned, clip, steps=2)["samples"]
    assert torch.isfinite(tuned_latent).all()
    assert (tuned_latent - sample(model, clip, steps=2)["samples"]).abs().max() > 1e-4


def test_spatial_lora_finetune_then_lora_loader(comfy):
    model, clip, vae = load_tiny()
    before = _state(model.patcher)
    with torch.inference_mode():
        tuned, _ = node("VC2_SpatialFineTune").train(**_finetune_options(model, clip, vae, variant="F-Spa-LORA"))
    after = _state(tuned.patcher)
    groups = _groups(model.unet)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(groups[k] == Group.SPATIAL for k in changed)
    lora_file = comfy.root / "models" / "loras" / "ft_00001.safetensors"
    assert lora_file.is_file()
    (loaded,) = node("VC2_LoraLoader").apply(model, lora_file.name, 1.0)
    assert tuned.attention == loaded.attention == model.attention == "sdpa"  # the nodes carry the loader's choice
    assert all(torch.allclose(v, after[k], atol=1e-6) for k, v in _state(loaded.patcher).items())
    (off,) = node("VC2_LoraLoader").apply(model, lora_file.name, 0.0)
    assert all(torch.equal(v, before[k]) for k, v in _state(off.patcher).items())
    assert all(torch.equal(v, before[k]) for k, v in _state(model.patcher).items())  # loading the base undoes patches
    with pytest.raises(ValueError, match="not a LoRA written by vc2"):
        (comfy.root / "models" / "loras" / "other.safetensors").write_bytes(b"junk")
        node("VC2_LoraLoader").apply(model, "other.safetensors", 1.0)


def test_cancelled_finetune_keeps_the_last_completed_step(comfy):
    model, clip, vae = load_tiny()
    comfy.interrupt.after = 2  # Cancel pressed during step 3 of 5 (after two progress updates)
    with pytest.raises(fake_comfyui.InterruptProcessingException):
        node("VC2_SpatialFineTune").train(**_finetune_options(model, clip, vae, steps=5, save_name="cut"))
    saved = comfy.root / "models" / "videocrafter" / "cut_00001.safetensors"
    reloaded, _ = load_checkpoint(saved)  # complete and loadable
    comfy.interrupt.after = None
    two_steps, _ = node("VC2_SpatialFineTune").train(**_finetune_options(model, clip, vae, steps=2, save_name=""))
    state = _state(two_steps.patcher)
    assert all(torch.equal(v, state[k]) for k, v in reloaded.unet.state_dict().items())
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]



def test_registry_metadata_and_requirements_agree():
    import re

    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    meta, comfy = project["project"], project["tool"]["comfy"]
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}", meta["name"]) and "comfyui" not in meta["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]) and meta["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"].startswith(">=")
    assert all(model["location"].startswith("/videocrafter/") for model in comfy["Models"])
    requirements = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in requirements if line]
    assert requirements == [dep for dep in meta["dependencies"] if not dep.startswith("torch")]  # torch: ComfyUI's
