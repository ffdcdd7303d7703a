"""``module_forward`` cases: one official module, rebuilt from the constructor call in its sidecar."""

from __future__ import annotations

import ast
import re

import torch

from vc2_core import modules as vc2_modules

ATOL = 1e-4  # FORMAT.md section 3
# The official classes that module cases exercise; ours keep their constructors.
CLASSES = {
    name: getattr(vc2_modules, name)
    for name in ("ResBlock", "TemporalConvBlock", "SpatialTransformer", "TemporalTransformer", "CrossAttention")
}


def tolerance(name, expected):
    return "abs", ATOL


def parse_constructor(text: str):
    """'Cls(1, 2, key=value)' -> (Cls, args, kwargs), literals only (nothing is evaluated)."""
    call = ast.parse(text, mode="eval").body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError(f"not a constructor call: {text}")
    if call.func.id not in CLASSES:
        raise ValueError(f"module {call.func.id} is not reproduced by vc2 (known: {sorted(CLASSES)})")
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    return CLASSES[call.func.id], args, kwargs


def _frames(video: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = video.shape
    return video.transpose(1, 2).reshape(b * t, c, h, w)


def _video(frames: torch.Tensor, t: int) -> torch.Tensor:
    n, c, h, w = frames.shape
    return frames.view(n // t, t, c, h, w).transpose(1, 2)


def produce(case) -> dict[str, torch.Tensor]:
    cls, args, kwargs = parse_constructor(case.config["constructor"])
    module = cls(*args, **kwargs).eval()
    module.load_state_dict(case.with_prefix("sd."), strict=True)
    inputs = case.with_prefix("in.")
    x, context = inputs["x"], inputs.get("context")
    out: dict[str, torch.Tensor] = {}
    if cls is vc2_modules.ResBlock:
        # official batch_size b -> our frame count t = (b t) / b
        out["y"] = module(x, inputs["emb"], x.shape[0] // int(inputs["batch_size"]))
        out["y_no_batch_size"] = module(x, inputs["emb"], None)
    elif cls is vc2_modules.TemporalConvBlock:
        out["y"] = module(x)
    elif cls is vc2_modules.SpatialTransformer:
        out["y"] = module(x, context)
    elif cls is vc2_modules.TemporalTransformer:
        t = x.shape[2]
        out["y"] = _video(module(_frames(x), t, context), t)
        if module.causal_attention:
            out["mask"] = module.causal_mask()
    else:  # CrossAttention
        out["y"] = module(x, context)
        for name in case.outputs():
            match = re.fullmatch(r"rel_([kv])_(\d+)x(\d+)", name)
            if match:
                table = getattr(module, f"relative_position_{match[1]}")
                out[name] = table(int(match[2]), int(match[3]))
    return out
