"""LoRA: low-rank adapters on the UNet's linear layers, chosen by parameter group.

VideoCrafter2 (arXiv 2401.09047, sec. 4) compares LoRA perturbations of the spatial modules,
the temporal modules or both (F-Spa-LORA, F-Temp-LORA, F-Spa&Temp-LORA, P-...). A target
``nn.Linear`` (weight W, (out, in)) is replaced by a :class:`LoRALinear` computing

    y = W x + b + (alpha / rank) * up(down(x)),   down: (rank, in), up: (out, rank), up = 0 at init

so the model is unchanged before the first step and only ``down`` / ``up`` train. Which layers
get adapters is decided in two steps:

- the group of the layer's weight, by :func:`vc2_core.parameter_groups.classify_unet_parameters`
  (owning module class, never a name pattern): spatial, temporal, conditioning;
- the target set (:data:`TARGETS`), by attribute name inside those modules. The paper does not
  state its targets or rank; ``"attention"`` (q, k, v and output projections of every attention)
  is the usual Stable Diffusion LoRA placement and the default, ``"attention+ff"`` adds the
  feed-forward layers and the transformers' proj_in / proj_out when those are Linear
  (``use_linear``; 1x1 convolutions are never wrapped).

A LoRA file (:func:`save_lora`) is safetensors with the adapters only, keyed by the UNet
state-dict path of the original Linear (``input_blocks.1.1.transformer_blocks.0.attn1.to_q``
+ ``.lora_down.weight`` / ``.lora_up.weight``) and metadata ``format = "vc2-lora"``, family,
groups, rank, alpha and targets, which is everything :func:`load_lora` needs to re-inject it.
:func:`merge_lora` folds the adapters into the weights (the UNet gets its official keys back)
and :func:`merge_lora_state` does the same on a plain state dict, for checkpoint files.
"""

from .checks import LoRAError
from .files import FORMAT_TAG, LoRAFile, load_lora, lora_weight_deltas, merge_lora_state, read_lora, save_lora
from .layers import (
    DOWN,
    TARGETS,
    UP,
    LoRALinear,
    inject_lora,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    merge_lora,
)

__all__ = ["DOWN", "FORMAT_TAG", "TARGETS", "UP", "LoRAError", "LoRAFile", "LoRALinear", "inject_lora", "load_lora",
           "lora_layers", "lora_parameters", "lora_state_dict", "lora_weight_deltas", "merge_lora", "merge_lora_state",
           "read_lora", "save_lora"]
