"""The shared workflows: only known node types, valid widget values, type-correct links, UI and API twins equal,
thumbnails present, and the released settings in the text-to-video workflow."""

from __future__ import annotations

import json
from pathlib import Path

import fake_comfyui
import pytest
import torch
from PIL import Image
from test_pack import load_pack
from test_t2v_turbo import random_lora

from vc2_core.checkpoint import save_checkpoint
from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.modules import UNetModel
from vc2_core.pipeline import GenerationSettings
from vc2_core.random_weights import randomize_zero_initialized
from vc2_core.t2v_turbo import turbo_config
from vc2_core.video_io import read_video

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
FILE_COMBOS = {"ckpt_name": (".ckpt", ".safetensors"), "lora_name": (".safetensors",), "turbo_name": (".pt", ".pth")}


class LossGraphNode:  # ComfyUI core (comfy_extras/nodes_train.py), the schema /object_info serves
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"loss": ("LOSS_MAP", {"default": {}}), "filename_prefix": ("STRING", {"default": "x"})}}


class KSampler:  # ComfyUI core (nodes.py), the schema /object_info serves (sampler and scheduler lists shortened)
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (["euler", "euler_ancestral", "dpmpp_2m", "ddim", "uni_pc"],),
            "scheduler": (["simple", "normal", "karras", "ddim_uniform"],),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}


CORE_NODES = {"LossGraphNode": LossGraphNode, "KSampler": KSampler}
UI_ONLY = {"Note"}  # frontend-only nodes, absent from the API format


@pytest.fixture
def schemas(tmp_path, monkeypatch):
    fake_comfyui.install(monkeypatch, tmp_path)
    return {**load_pack().NODE_CLASS_MAPPINGS, **CORE_NODES}


def inputs_of(cls) -> dict[str, tuple]:
    schema = cls.INPUT_TYPES()
    return {**schema.get("required", {}), **schema.get("optional", {})}


def is_widget(spec: tuple) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def check_value(where: str, name: str, spec: tuple, value) -> None:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        if name in FILE_COMBOS:
            assert isinstance(value, str) and value.endswith(FILE_COMBOS[name]), f"{where}.{name}={value!r}"
        else:
            assert value in kind, f"{where}.{name}={value!r} not in {kind}"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}.{name}={value!r}"
        assert options["min"] <= value <= options["max"], f"{where}.{name}={value}"
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}.{name}={value!r}"
        assert options["min"] <= value <= options["max"], f"{where}.{name}={value}"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}.{name}={value!r}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}.{name}={value!r}"


def ui_widget_values(where: str, cls, node: dict) -> dict:
    """widgets_values mapped onto the widget inputs, in INPUT_TYPES order (seed-like INTs with
    control_after_generate take one extra slot)."""
    values = list(node.get("widgets_values", []))
    named = {}
    for name, spec in inputs_of(cls).items():
        if not is_widget(spec):
            continue
        assert values, f"{where}: no widget value for {name}"
        named[name] = values.pop(0)
        if len(spec) > 1 and spec[1].get("control_after_generate"):
            assert values.pop(0) in ("fixed", "increment", "decrement", "randomize"), f"{where}.{name}"
    assert not values, f"{where}: extra widget values {values}"
    return named


def ui_to_api(workflow: dict, schemas: dict) -> dict:
    """The API prompt of a UI workflow (what the frontend's graphToPrompt gives, without _meta)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY:
            continue
        cls = schemas[node["type"]]
        inputs = dict(ui_widget_values(f"node {node['id']}", cls, node))
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_nodes_widgets_links_and_thumbnail(path, schemas):
    workflow = json.loads(path.read_text())
    assert workflow.get("version") == 0.4 and {"nodes", "links"} <= set(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in workflow["nodes"]:
        assert node["type"] in schemas or node["type"] in UI_ONLY, f"{path.name}: unknown node {node['type']}"
        if node["type"] in schemas:
            for name, value in ui_widget_values(f"{path.name} node {node['id']}", schemas[node["type"]], node).items():
                check_value(f"{path.name} node {node['id']}", name, inputs_of(schemas[node["type"]])[name], value)
    for link_id, source, source_slot, target, target_slot, kind in workflow["links"]:
        produced = schemas[nodes[source]["type"]].RETURN_TYPES[source_slot]
        input_name = nodes[target]["inputs"][target_slot]["name"]
        expected = inputs_of(schemas[nodes[target]["type"]])[input_name][0]
        assert produced == expected == kind, f"{path.name} link {link_id}: {produced} -> {input_name} ({expected})"
    with Image.open(path.with_suffix(".jpg")) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.width >= 256


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_equals_the_ui_workflow_and_is_complete(path, schemas):
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    ui = ui_to_api(json.loads(path.read_text()), schemas)
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()} == ui
    for node_id, node in api.items():
        cls = schemas[node["class_type"]]
        required = cls.INPUT_TYPES()["required"]
        assert set(required) <= set(node["inputs"]), f"{path.name} node {node_id}: missing inputs"
        for name, value in node["inputs"].items():
            spec = inputs_of(cls)[name]
            if isinstance(value, list) and not isinstance(spec[0], list):
                source = api[value[0]]
                assert schemas[source["class_type"]].RETURN_TYPES[value[1]] == spec[0], f"{path.name} {name}"
            else:
                check_value(f"{path.name} node {node_id}", name, spec, value)


def test_loss_graph_prefixes_have_no_folder():
    """ComfyUI's Plot Loss Graph writes into its temp folder without creating subfolders (0.3.64): a prefix
    with a folder fails the whole prompt with FileNotFoundError (seen in the end-to-end run)."""
    for path in UI_FILES:
        for node in json.loads((WORKFLOWS / "api" / path.name).read_text()).values():
            if node["class_type"] == "LossGraphNode":
                assert "/" not in node["inputs"]["filename_prefix"], path.name


def test_every_ui_workflow_has_an_api_twin_and_the_pack_ships_no_other():
    assert UI_FILES and sorted(p.name for p in (WORKFLOWS / "api").glob("*.json")) == [p.name for p in UI_FILES]


def test_text_to_video_workflow_uses_the_released_settings():
    api = json.loads((WORKFLOWS / "api" / "vc2_text_to_video.json").read_text())
    by_type = {node["class_type"]: node["inputs"] for node in api.values()}
    released = GenerationSettings()
    sampler, latent = by_type["VC2_Sampler"], by_type["VC2_EmptyVideoLatent"]
    assert (sampler["steps"], sampler["cfg"], sampler["eta"], sampler["sampler_name"]) == (
        released.steps, released.cfg, 1.0, released.sampler)
    assert (sampler["fps"], latent["height"], latent["width"], latent["frames"]) == (28, 320, 512, 16)
    assert by_type["VC2_TextEncode"] and by_type["VC2_SaveVideo"]["fps"] == 10.0  # the released script's file rate


def test_ksampler_workflows_sample_the_loaders_comfyui_model():
    """The KSampler workflows feed KSampler the loader's MODEL output (or VC2 Model to MODEL) and decode with the
    pack's VAE; the text-to-video one keeps the released guidance scale and size."""
    api = json.loads((WORKFLOWS / "api" / "vc2_ksampler_text_to_video.json").read_text())
    by_type = {node["class_type"]: node["inputs"] for node in api.values()}
    loader = next(node_id for node_id, node in api.items() if node["class_type"] == "VC2_CheckpointLoader")
    assert by_type["KSampler"]["model"] == [loader, 3]  # the loader's ComfyUI MODEL output
    assert by_type["KSampler"]["cfg"] == GenerationSettings().cfg == 12.0
    latent = by_type["VC2_EmptyVideoLatent"]
    assert (latent["height"], latent["width"], latent["frames"]) == (320, 512, 16)
    tuned = json.loads((WORKFLOWS / "api" / "vc2_ksampler_finetune.json").read_text())
    source = tuned[next(v for v in tuned.values() if v["class_type"] == "KSampler")["inputs"]["model"][0]]
    assert source["class_type"] == "VC2_ModelToComfy"
    assert tuned[source["inputs"]["model"][0]]["class_type"] == "VC2_SpatialFineTune"


def test_t2v_turbo_workflow_uses_their_settings_on_the_turbo_model():
    """T2V-Turbo's defaults (4 steps, guidance 7.5 into the embedding, eta 1, fps 16) on the T2V-Turbo Loader's
    model, which takes the checkpoint loader's; latents of the released size."""
    api = json.loads((WORKFLOWS / "api" / "vc2_t2v_turbo.json").read_text())
    by_type = {node["class_type"]: node["inputs"] for node in api.values()}
    sampler, turbo, latent = by_type["VC2_Sampler"], by_type["VC2_TurboLoader"], by_type["VC2_EmptyVideoLatent"]
    assert (sampler["sampler_name"], sampler["steps"], sampler["cfg"], sampler["eta"]) == ("t2v-turbo", 4, 7.5, 1.0)
    assert sampler["fps"] == by_type["VC2_SaveVideo"]["fps"] == 16
    assert api[sampler["model"][0]]["class_type"] == "VC2_TurboLoader" and sampler["model"] == latent["model"]
    assert api[turbo["model"][0]]["class_type"] == "VC2_CheckpointLoader" and turbo["model"][1] == 0
    assert (turbo["turbo_name"], turbo["strength"]) == ("unet_lora.pt", 1.0)
    assert (latent["height"], latent["width"], latent["frames"]) == (320, 512, 16)


def run_prompt(prompt: dict, schemas: dict) -> dict:
    """Run an API-format prompt as ComfyUI's executor does: every node once, after the nodes it takes inputs from,
    under inference mode, output nodes given the hidden prompt; returns each node's result."""
    results = {}

    def result_of(node_id: str):
        if node_id not in results:
            node = prompt[node_id]
            cls = schemas[node["class_type"]]
            inputs = {name: result_of(value[0])[value[1]] if isinstance(value, list) else value
                      for name, value in node["inputs"].items()}
            if "prompt" in cls.INPUT_TYPES().get("hidden", {}):
                inputs["prompt"] = prompt
            results[node_id] = getattr(cls(), cls.FUNCTION)(**inputs)
        return results[node_id]

    with torch.inference_mode():
        for node_id in prompt:
            result_of(node_id)
    return results


def test_t2v_turbo_workflow_runs(tmp_path, monkeypatch):
    """The shipped API workflow run through the pack's nodes (fake ComfyUI calls) on stand-ins of its files: the
    tiny-512 preset as videocrafter2_512.ckpt (VideoCrafter2-512's levels and size rules at toy width) and a
    T2V-Turbo LoRA of random values in their layout as unet_lora.pt. Only the latent size is made small (64x128,
    4 frames) to keep the CPU time short; the released size runs in tools/comfy_e2e_vc2.sh's real ComfyUI."""
    state = fake_comfyui.install(monkeypatch, tmp_path)
    schemas = {**load_pack().NODE_CLASS_MAPPINGS, **CORE_NODES}
    config = preset("tiny-512")
    torch.manual_seed(0)
    model = VideoCrafter(config)
    randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
    (tmp_path / "models" / "videocrafter").mkdir()
    save_checkpoint(model, tmp_path / "models" / "videocrafter" / "videocrafter2_512.ckpt")
    loras = tmp_path / "models" / "loras"
    loras.mkdir()
    torch.save(random_lora(UNetModel(turbo_config(config.unet)), seed=3), loras / "unet_lora.pt")

    prompt = json.loads((WORKFLOWS / "api" / "vc2_t2v_turbo.json").read_text())
    latent = next(node for node in prompt.values() if node["class_type"] == "VC2_EmptyVideoLatent")
    latent["inputs"] |= {"width": 128, "height": 64, "frames": 4}
    results = run_prompt(prompt, schemas)

    turbo = next(results[i][0] for i, node in prompt.items() if node["class_type"] == "VC2_TurboLoader")
    assert turbo.name == "videocrafter2_512.ckpt + t2v-turbo unet_lora.pt" and turbo.config.unet.time_cond_proj_dim
    assert [value for value, total in state.progress] == [1, 2, 3, 4]  # four sampler steps
    saved = next(results[i]["ui"]["images"][0] for i, node in prompt.items() if node["class_type"] == "VC2_SaveVideo")
    frames, fps = read_video(tmp_path / "output" / saved["subfolder"] / saved["filename"])
    assert saved["filename"].startswith("t2v_turbo") and frames.shape == (4, 64, 128, 3) and abs(fps - 16) < 0.5
    assert frames.std() > 0
