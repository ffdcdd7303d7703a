"""The fallback note as torch.compile sees it: run when a graph is traced, not traced into the graph.

Dynamo cannot trace logging (a graph break) and would guard on the fallback counter (a recompile at
every call). :func:`vc2_core.attention.attention` imports this module only while Dynamo traces, when
torch._dynamo is loaded anyway (importing vc2_core never loads it), and calls this note, which Dynamo
runs once per trace. So under torch.compile a fallback is logged and counted when its graph is traced,
not at each call, and named by its check: the reason's shapes may be symbolic there.
"""

import torch

from .dispatch import note_fallback


@torch.compiler.assume_constant_result
def note_fallback_when_traced(requested: str, used: str, check: str) -> bool:
    return note_fallback(requested, used, check, f"traced by torch.compile; unmet: {check}")
