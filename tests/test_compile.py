"""The UNet under ``torch.compile``: one graph, no graph breaks, same numbers as eager (CPU, tiny configs).

Dynamo tracing costs seconds per trace on 2 CPU cores whatever the tensor sizes (it grows with the
number of blocks), so the configs keep the VideoCrafter layouts (temporal convs, temporal
transformers, init_attn, fps embedding; relative positions and causal masks for VideoCrafter1)
with as few blocks as cover every layer kind.

The numeric check uses the ``aot_eager`` backend: it runs the whole Dynamo + AOTAutograd
capture (functionalisation, decompositions) that inductor consumes, but executes the captured
graph with the eager ATen kernels, so it takes seconds. Inductor itself spends ~1.5 minutes
compiling C++ for this config on 2 cores (cold cache), too long for CI; it was run by hand and
matched eager within 1e-4 (about 1e-5 on outputs of about 3: fused kernels reassociate reductions).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import random_unet, tiny_unet_config

from vc2_core.attention import attention_backend, fallback_counts
from vc2_core.modules import BasicTransformerBlock, ResBlock, UNetModel

FRAMES = 4


def vc2_config(**changes):
    """The tiny VideoCrafter2 UNet (temporal convs in every ResBlock, fps_cond, init_attn, down/upsampling) with
    its spatial + temporal transformers in the middle block only: every layer kind once, at half the trace time."""
    return tiny_unet_config(attention_resolutions=(), temporal_length=FRAMES, **changes)


def one_level(config):
    """The same UNet without its second level (no down/upsampling; 5 ResBlocks instead of 8): a shorter trace."""
    return dataclasses.replace(config, channel_mult=(1,))


def vc1_config():
    """VideoCrafter1 flags (preset vc1-512: relative positions, no temporal convs, no fps) plus the causal mask."""
    return one_level(vc2_config(temporal_conv=False, fps_cond=False, use_relative_position=True,
                                use_causal_attention=True))


def _inputs(unet: UNetModel, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(1, cfg.in_channels, FRAMES, 8, 8, generator=g)
    context = torch.randn(1, 7, cfg.context_dim, generator=g)
    return x, torch.tensor([500]), context, torch.tensor([8])


def _checkpoint_regions(graph: torch.fx.GraphModule) -> int:
    return sum(node.op == "call_function" and getattr(node.target, "__name__", "") == "tag_activation_checkpoint"
               for node in graph.graph.nodes)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("make_config", [vc2_config, vc1_config], ids=["vc2", "vc1"])
def test_inference_forward_is_one_graph(make_config):
    unet = random_unet(make_config())
    with torch.no_grad():
        report = torch._dynamo.explain(unet)(*_inputs(unet))
    assert report.break_reasons == []
    assert (report.graph_count, report.graph_break_count) == (1, 0)


def test_triton_backend_is_one_graph():
    # the kernel is a torch.library custom op: Dynamo records it as one node (CPU: Triton's interpreter)
    # (its cross-attention falls back to SDPA: the fallback is noted when tracing, without a graph break)
    unet = random_unet(vc2_config())
    before = fallback_counts().get(("triton", "sdpa"), 0)
    with torch.no_grad(), attention_backend("triton"):
        report = torch._dynamo.explain(unet)(*_inputs(unet))
    assert report.break_reasons == []
    assert (report.graph_count, report.graph_break_count) == (1, 0)
    assert fallback_counts()[("triton", "sdpa")] > before


def test_a_new_backend_context_retraces():
    # the compiled UNet follows the block it runs in: Dynamo guards on the thread's chosen backend
    unet = random_unet(one_level(vc2_config()))
    inputs = _inputs(unet)
    compiled = torch.compile(unet, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        with attention_backend("math"):
            compiled(*inputs)
        with attention_backend("xformers"), pytest.raises(Exception, match="'xformers' cannot run here"):
            compiled(*inputs)  # xformers needs CUDA: the new choice reached the attention calls


def test_fullgraph_compile_matches_eager():
    unet = random_unet(vc2_config())
    inputs = _inputs(unet)
    compiled = torch.compile(unet, fullgraph=True, backend="aot_eager")  # fullgraph: any graph break raises
    with torch.no_grad():
        expected = unet(*inputs)
        got = compiled(*inputs)
    assert expected.abs().max() > 0.1
    # the same ATen kernels run in the same order: equal to fp32 rounding (observed: bit-identical)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_checkpoint", [False, True], ids=["plain", "checkpointed"])
def test_training_forward_and_loss_is_one_graph(use_checkpoint):
    """Train mode with gradients (dropout active). torch.utils.checkpoint does not split the graph: Dynamo
    captures each checkpointed ResBlock / transformer block as a ``tag_activation_checkpoint`` region."""
    unet = random_unet(one_level(vc2_config(use_checkpoint=use_checkpoint))).train()
    x, t, context, fps = _inputs(unet)

    def loss(x, t, context, fps):
        return unet(x, t, context, fps).square().mean()

    report = torch._dynamo.explain(loss)(x, t, context, fps)
    assert report.break_reasons == []
    assert (report.graph_count, report.graph_break_count) == (1, 0)
    blocks = sum(isinstance(m, (ResBlock, BasicTransformerBlock)) for m in unet.modules())
    assert _checkpoint_regions(report.graphs[0]) == (blocks if use_checkpoint else 0)
