"""Bad node input, tried systematically: every node of the pack with inputs ComfyUI could pass it, each case in
a table. A case calls the node as ComfyUI would (tests/fake_comfyui.py) and must raise a ValueError,
FileNotFoundError or FloatingPointError naming the problem (one line, or a headline and one line per problem,
as GenerationSettings lists them), without a traceback's worth of text, and write nothing. The CLI's table is
tests/test_bad_input.py, the files both try tests/bad_files.py; docs/cli.md's reliability table counts both tables.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import fake_comfyui
import pytest
import torch
from bad_files import make_bad_files, tree
from test_bad_input import CLI_CASES
from test_pack import node

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def comfy(files, tmp_path_factory):
    """The fake ComfyUI for the whole module (one load of the tiny model serves every case)."""
    root = tmp_path_factory.mktemp("comfyui")
    with pytest.MonkeyPatch.context() as monkeypatch:
        state = fake_comfyui.install(monkeypatch, root)
        models, loras = root / "models" / "videocrafter", root / "models" / "loras"
        models.mkdir()
        loras.mkdir()
        for name in ("ckpt", "trunc", "junk", "empty", "foreign"):
            (models / files[name].name).symlink_to(files[name])
        (models / "folder.safetensors").mkdir()
        for name in ("lora", "lora_trunc", "lora_vc2", "junk", "ckpt"):
            (loras / files[name].name).symlink_to(files[name])
        state.root = root
        yield state


@pytest.fixture(scope="module")
def tiny(comfy):
    """The loaded tiny model (model, clip, vae) and an encoded prompt."""
    model, clip, vae = node("VC2_CheckpointLoader").load("tiny.safetensors", "fp32", "sdpa")[:3]  # (+ MODEL)
    return model, clip, vae, node("VC2_TextEncode").encode(clip, "a red ball")[0]


def _latent(tiny, frames=2, batch=1):
    return node("VC2_EmptyVideoLatent").make(tiny[0], 16, 16, frames, batch)[0]


def _sample(tiny, **changes):
    model, _, _, text = tiny
    options = dict(model=model, positive=text, negative=text, latent=_latent(tiny), seed=1, steps=1, cfg=7.5,
                   eta=1.0, fps=8, sampler_name="ddim", context_frames=0, context_overlap=4, context_loop=False)
    return node("VC2_Sampler").sample(**(options | changes))


def _finetune(tiny, **changes):
    model, clip, vae, _ = tiny
    options = dict(model=model, clip=clip, vae=vae, variant="F-Spa-DIR", steps=2, learning_rate=1e-4, batch_size=1,
                   width=16, height=16, lora_rank=2, gradient_checkpointing=False, seed=0, save_name="ft",
                   save_every=0, images=torch.rand(2, 20, 20, 3, generator=torch.Generator().manual_seed(0)),
                   caption="a red square")
    with torch.inference_mode():
        return node("VC2_SpatialFineTune").train(**(options | changes))


def _loader(name, dtype="fp32", attention="sdpa"):
    return lambda tiny: node("VC2_CheckpointLoader").load(name, dtype, attention)


def _lora(name, strength=1.0):
    return lambda tiny: node("VC2_LoraLoader").apply(tiny[0], name, strength)


def _save(images, fps=8.0, kind="mp4", prefix="vc2/bad"):
    return lambda tiny: node("VC2_SaveVideo").save(images, fps, kind, prefix)


def _sigmas(steps=4, spacing="logsnr", end="official", model=None):
    return lambda tiny: node("VC2_Sigmas").sigmas(model or tiny[0].patcher, steps, spacing, end)


def _to_comfyui(name):
    return lambda tiny: node("VC2_LoraToComfyUI").convert(name)


NOT_A_VC2_MODEL = SimpleNamespace(model=torch.nn.Linear(1, 1))  # a ComfyUI MODEL of another family, as seen here

NODE_CASES = {  # (case id, needs the tiny model loaded, call, message)
    "VC2_CheckpointLoader": [
        ("missing", False, _loader("missing.safetensors"), "is not in ComfyUI/models/videocrafter"),
        ("folder", False, _loader("folder.safetensors"), "is not in ComfyUI/models/videocrafter"),
        ("truncated", False, _loader("trunc.safetensors"), "truncated or corrupt safetensors file"),
        ("junk", False, _loader("junk.safetensors"), "neither a safetensors file nor a PyTorch checkpoint"),
        ("empty", False, _loader("empty.safetensors"), "neither a safetensors file nor a PyTorch checkpoint"),
        ("foreign", False, _loader("sd15.safetensors"), "sd15.safetensors is not a VideoCrafter checkpoint"),
        ("dtype", False, _loader("tiny.safetensors", dtype="fp8"), "dtype 'fp8': choose one of fp32, fp16, bf16"),
        ("attention", False, _loader("tiny.safetensors", attention="flash9"), "unknown attention backend 'flash9'"),
    ],
    "VC2_LoraLoader": [
        ("missing", True, _lora("gone.safetensors"), "is not in ComfyUI/models/loras"),
        ("truncated", True, _lora("lora_trunc.safetensors"), "not a LoRA written by vc2"),
        ("junk", True, _lora("junk.safetensors"), "not a LoRA written by vc2"),
        ("a-checkpoint", True, _lora("tiny.safetensors"), "not a LoRA written by vc2"),
        ("other-family", True, _lora("lora-vc2.safetensors"), "was trained on vc2-512; this model is tiny"),
        ("strength-nan", True, _lora("lora.safetensors", float("nan")), "strength nan: must be finite"),
    ],
    "VC2_EmptyVideoLatent": [
        ("height", True, lambda t: node("VC2_EmptyVideoLatent").make(t[0], 16, 30, 2, 1), "height 30"),
        ("width", True, lambda t: node("VC2_EmptyVideoLatent").make(t[0], 0, 16, 2, 1), "width 0"),
        ("frames", True, lambda t: node("VC2_EmptyVideoLatent").make(t[0], 16, 16, 0, 1), "frames 0: must be"),
        ("batch", True, lambda t: node("VC2_EmptyVideoLatent").make(t[0], 16, 16, 2, 0), "batch_size 0: must be"),
    ],
    "VC2_Sampler": [
        ("steps-0", True, lambda t: _sample(t, steps=0), "steps 0: must be at least 1"),
        ("steps-too-many", True, lambda t: _sample(t, steps=1001), "exceed the 1000 training timesteps"),
        ("cfg-negative", True, lambda t: _sample(t, cfg=-1.0), "cfg -1.0: the guidance scale must be >= 0"),
        ("cfg-nan", True, lambda t: _sample(t, cfg=float("nan")), "cfg nan: must be a finite number"),
        ("eta-deterministic", True, lambda t: _sample(t, sampler_name="dpmpp_2m", eta=0.5), "is deterministic"),
        ("sampler", True, lambda t: _sample(t, sampler_name="plms"), "sampler 'plms': unknown"),
        ("fps-0", True, lambda t: _sample(t, fps=0), "fps 0: must be a positive whole number"),
        ("seed-negative", True, lambda t: _sample(t, seed=-1), "seed -1: must be in [0, 2**64 - 1]"),
        ("seeds-past-the-range", True, lambda t: _sample(t, seed=2**64 - 1, latent=_latent(t, batch=2)),
         "seed 18446744073709551615: a batch of 2 needs seeds up to 18446744073709551616"),
        ("context", True, lambda t: _sample(t, latent=_latent(t, frames=8), context_frames=4, context_overlap=4),
         "context overlap must be in [0, 3]"),
        ("latent-image", True, lambda t: _sample(t, latent={"samples": torch.zeros(1, 4, 2, 2)}),
         "latent: expected a video latent"),
        ("conditioning-width", True, lambda t: _sample(t, positive=[[torch.zeros(1, 77, 768), {}]]),
         "positive: this CONDITIONING is (1, 77, 768)"),
    ],
    "VC2_VAEDecode": [
        ("latent-image", True, lambda t: node("VC2_VAEDecode").decode(t[2], {"samples": torch.zeros(1, 4, 2, 2)}, 1),
         "latent: expected video latents"),
        ("chunk-0", True, lambda t: node("VC2_VAEDecode").decode(t[2], {"samples": torch.zeros(1, 4, 1, 2, 2)}, 0),
         "chunk_frames 0: must be at least 1"),
    ],
    "VC2_SaveVideo": [
        ("no-frames", False, _save(torch.zeros(0, 16, 16, 3)), "images: expected frames"),
        ("not-rgb", False, _save(torch.zeros(2, 16, 16)), "images: expected frames"),
        ("odd-mp4", False, _save(torch.zeros(2, 15, 16, 3)), "needs an even width and height"),
        ("format", False, _save(torch.zeros(2, 16, 16, 3), kind="avi"), "format 'avi'"),
        ("fps-0", False, _save(torch.zeros(2, 16, 16, 3), fps=0.0), "fps 0.0: must be a positive number"),
        ("fps-nan", False, _save(torch.zeros(2, 16, 16, 3), fps=float("nan")), "fps nan: must be a positive number"),
    ],
    "VC2_ModelToComfy": [
        ("not-a-vc2-model", False, lambda t: node("VC2_ModelToComfy").convert(NOT_A_VC2_MODEL),
         "model: expected a VC2_MODEL of this pack; got a SimpleNamespace"),
    ],
    "VC2_Sigmas": [
        ("steps-0", True, _sigmas(steps=0), "steps 0: must be in [1, 999]"),
        ("steps-1000", True, _sigmas(steps=1000), "steps 1000: must be in [1, 999]"),
        ("spacing", True, _sigmas(spacing="karras"), "unknown timestep spacing 'karras'"),
        ("end", True, _sigmas(end="half"), "end 'half': choose one of official, zero"),
        ("other-model", False, _sigmas(model=NOT_A_VC2_MODEL), "model: expected the MODEL output of Load"),
    ],
    "VC2_ConditioningFPS": [
        ("fps-0", True, lambda t: node("VC2_ConditioningFPS").set_fps(t[3], 0), "fps 0: must be a positive whole"),
        ("fps-fraction", True, lambda t: node("VC2_ConditioningFPS").set_fps(t[3], 7.5), "fps 7.5: must be a positive"),
    ],
    "VC2_LoraToComfyUI": [
        ("missing", False, _to_comfyui("gone.safetensors"), "is not in ComfyUI/models/loras"),
        ("truncated", False, _to_comfyui("lora_trunc.safetensors"), "not a LoRA written by vc2"),
        ("junk", False, _to_comfyui("junk.safetensors"), "not a LoRA written by vc2"),
        ("a-checkpoint", False, _to_comfyui("tiny.safetensors"), "not a LoRA written by vc2"),
    ],
    "VC2_SpatialFineTune": [
        ("no-images", True, lambda t: _finetune(t, images=None), "no training images"),
        ("no-caption", True, lambda t: _finetune(t, caption=" "), "caption is missing"),
        ("size", True, lambda t: _finetune(t, height=30), "height 30"),
        ("steps-0", True, lambda t: _finetune(t, steps=0), "steps 0: must be at least 1"),
        ("lr-negative", True, lambda t: _finetune(t, learning_rate=-1.0), "learning_rate -1.0: must be positive"),
        ("lr-nan", True, lambda t: _finetune(t, learning_rate=float("nan")), "learning_rate nan: must be positive"),
        ("folder-missing", True, lambda t: _finetune(t, images=None, image_folder="gone"), "is not a folder"),
        ("save-name-escapes", True, lambda t: _finetune(t, save_name="../up"), "save_name '../up'"),
        ("variant", True, lambda t: _finetune(t, variant="F-Temp-DIR"), "variant 'F-Temp-DIR'"),
        ("loss-goes-nan", True, lambda t: _finetune(t, learning_rate=1e30, steps=2),
         "; lower learning_rate (now 1e+30)"),
    ],
}

NODE_IDS = [(group, case) for group, cases in NODE_CASES.items() for case in cases]


@pytest.mark.parametrize("group, case", NODE_IDS, ids=[f"{group}-{case[0]}" for group, case in NODE_IDS])
def test_node_refuses_bad_input(comfy, request, group, case):
    name, needs_model, call, message = case
    tiny = request.getfixturevalue("tiny") if needs_model else None
    before = tree(comfy.root)
    with pytest.raises((ValueError, FileNotFoundError, FloatingPointError)) as error:
        call(tiny)
    text = str(error.value)  # one line, or a headline and one line per problem ("invalid generation settings:")
    assert message in text and all(line.strip() for line in text.splitlines()), text
    assert tree(comfy.root) == before, "the refused node left files"


def test_the_reliability_table_counts_every_case():
    table = DOCS.read_text().split("## Reliability table", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `?([\w ]+?)`? \| (\d+) \|", table, re.MULTILINE))
    counts = {f"vc2 {group}": len(cases) for group, cases in CLI_CASES.items()}
    counts |= {group: len(cases) for group, cases in NODE_CASES.items()}
    counts["vc2 train NaN loss"] = 1  # test_bad_input.test_a_learning_rate_that_makes_the_loss_nan_stops_...
    assert {name: int(count) for name, count in rows.items()} == counts
