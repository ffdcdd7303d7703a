"""One process of an FSDP training run on the CPU (gloo), for tests/test_training_distributed.py.

accelerate runs FSDP on GPUs only (on a CPU it would run DDP; ``vc2 train`` refuses, see
:mod:`vc2_core.training.launch_check`), so this runs the library's own training step (``TrainStep``,
the same micro-batches, dropout keys, clipping and AdamW as ``vc2 train``) under torch's
``FullyShardedDataParallel`` with the settings of ``trainers/accelerate/fsdp.yaml``:

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_worker.py CONFIG FSDP_YAML OUT [SECTION.FIELD=V ...]

The main process writes the gathered UNet after ``run.max_steps`` steps to OUT (safetensors, official keys;
the metadata ``held`` lists how many parameter values each process held: its shard).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable
from typing import ContextManager

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from safetensors.torch import save_file
from torch.distributed.fsdp import BackwardPrefetch, FullStateDictConfig, ShardingStrategy, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from vc2_core.attention import attention_backend
from vc2_core.keys import UNET_PREFIX
from vc2_core.modules import unet as unet_module
from vc2_core.training.batches import BatchMaker
from vc2_core.training.config import load_config
from vc2_core.training.loop import Progress
from vc2_core.training.sources import open_sources
from vc2_core.training.stages import get_stage, set_up_stage
from vc2_core.training.step import MicroBatches, Optimisation, TrainStep
from vc2_core.training.trainer import build_training_model

Tensor = torch.Tensor
WRAP_CLASSES = {"UNetBlock": unet_module.UNetBlock}


class FSDPEngine:
    """The Engine of a training step (vc2_core.training.engine) over a root FSDP module on the CPU."""

    device = torch.device("cpu")

    def __init__(self, model: FSDP):
        self.model = model
        self.process_index, self.num_processes = dist.get_rank(), dist.get_world_size()

    def no_sync(self, model: nn.Module) -> ContextManager:
        return model.no_sync()

    def autocast(self) -> ContextManager:
        return contextlib.nullcontext()

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, parameters: Iterable[nn.Parameter], max_norm: float) -> Tensor:
        return self.model.clip_grad_norm_(max_norm)  # the norm over every shard

    def reduce(self, tensor: Tensor, reduction: str = "sum") -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total / self.num_processes if reduction == "mean" else total


def wrap(unet: nn.Module, fsdp_config: dict) -> FSDP:
    """The UNet under FSDP as the accelerate config describes it (FSDP 1, transformer-based wrapping), but for
    fsdp_sync_module_states, which needs GPUs (torch refuses it on the CPU): every process builds the same initial
    weights from run.seed."""
    assert fsdp_config["fsdp_version"] == 1 and fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    classes = {WRAP_CLASSES[name] for name in fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")}
    return FSDP(unet, auto_wrap_policy=ModuleWrapPolicy(classes),
                sharding_strategy=ShardingStrategy[fsdp_config["fsdp_sharding_strategy"]],
                backward_prefetch=BackwardPrefetch[fsdp_config["fsdp_backward_prefetch"]],
                use_orig_params=fsdp_config["fsdp_use_orig_params"], device_id=torch.device("cpu"))


def run(config_path: str, fsdp_yaml: str, out: str, overrides: list[str]) -> None:
    nested: dict[str, dict] = {}
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = yaml.safe_load(value)
    config = load_config(config_path, nested)
    with open(fsdp_yaml) as file:
        fsdp_config = yaml.safe_load(file)["fsdp_config"]
    model = build_training_model(config)
    stage = get_stage(config.stage.name)
    trainable = set_up_stage(model.unet, stage, config.stage)
    for frozen in (model.vae, model.text_encoder):
        frozen.requires_grad_(False).eval()
    model.unet.train()
    unet = wrap(model.unet, fsdp_config)
    engine = FSDPEngine(unet)
    optimisation = Optimisation.create(trainable, config.optim, config.run.max_steps)  # the original parameters
    sources = open_sources(config, stage, model.config, engine.process_index, engine.num_processes, Progress(),
                           fresh=True)
    with torch.no_grad():
        uncond = model.text_encoder.encode([""])
    maker = BatchMaker(model.vae, model.text_encoder, model.schedule.num_timesteps, seed=config.run.seed,
                       caption_dropout=config.data.caption_dropout, uncond=uncond, device=engine.device)
    step = TrainStep(engine, unet, model.schedule, optimisation,
                     MicroBatches(sources, maker, config.run.seed, config.images.ratio))
    with attention_backend(config.model.attention):
        for index in range(config.run.max_steps):
            step.run(index)
    held = [0] * engine.num_processes  # the parameter values each process holds between steps (its shard)
    dist.all_gather_object(held, sum(p.numel() for p in unet.parameters()))
    with FSDP.state_dict_type(unet, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=True)):
        state = unet.state_dict()  # gathered on the main process
    if engine.process_index == 0:
        save_file({UNET_PREFIX + k: v.contiguous() for k, v in state.items()}, out,
                  metadata={"held": json.dumps(held)})


if __name__ == "__main__":
    dist.init_process_group("gloo")
    try:
        run(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
    finally:
        dist.destroy_process_group()
