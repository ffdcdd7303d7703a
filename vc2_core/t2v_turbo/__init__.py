"""T2V-Turbo: VideoCrafter2 distilled to few-step sampling (Li et al. 2024, public repository Ji4chenLi/t2v-turbo).

Their releases for VideoCrafter2 are

- T2V-Turbo (VC2), ``unet_lora.pt``: a LoRA over every Linear, Conv2d and Conv3d of the UNet,
  stored as a bare list of tensors in module order, plus a guidance-scale embedding layer
  (``time_cond_proj``) the UNet gains;
- T2V-Turbo-v2, ``unet_mg.pt`` / ``unet_no_mg.pt``: a whole UNet state dict with that embedding
  and a motion-guidance condition (``motion_cond_proj``, ``combine_proj``).

Both sample with their consistency sampler (``t2v-turbo`` in :mod:`vc2_core.diffusion.registry`)
in 4 to 8 steps with one UNet call per step: the guidance scale is an input of the UNet
(:class:`TurboEps`), not a second, unconditional pass.

- :mod:`.files` reads their files (``torch.load(weights_only=True)`` only);
- :mod:`.lora` maps their LoRA onto this UNet's modules and merges it at a strength;
- :mod:`.unet` builds a T2V-Turbo UNet from VideoCrafter2's weights and their file, and :mod:`.model`
  a whole model with it (:func:`with_turbo`, what ``vc2 sample --lora`` uses; :func:`turbo_unet`, the UNet
  alone, what the ComfyUI node uses);
- :mod:`.conditioning` holds the scale embedding and the eps predictor the sampler calls.
"""

from .conditioning import EMBEDDING_DIM, TurboEps, scale_embedding
from .files import TurboLoRA, TurboUNet, TurboWeightsError, read_turbo_weights
from .lora import lora_targets, merge_turbo_lora, turbo_lora_deltas
from .model import turbo_unet, with_turbo
from .unet import build_turbo_unet, check_turbo_base, config_for, time_cond_proj_base, turbo_config

__all__ = ["EMBEDDING_DIM", "TurboEps", "TurboLoRA", "TurboUNet", "TurboWeightsError", "build_turbo_unet",
           "check_turbo_base", "config_for", "lora_targets", "merge_turbo_lora", "read_turbo_weights",
           "scale_embedding", "time_cond_proj_base", "turbo_config", "turbo_lora_deltas", "turbo_unet", "with_turbo"]
