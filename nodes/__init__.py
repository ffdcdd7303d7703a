"""ComfyUI nodes of the vc2 pack: thin wrappers that validate inputs and call vc2_core."""

from .decode import VC2VAEDecode
from .finetune import VC2SpatialFineTune
from .latent import VC2EmptyVideoLatent
from .loader import VC2CheckpointLoader
from .lora import VC2LoraLoader
from .lora_comfy import VC2LoraToComfyUI
from .native import VC2ConditioningFPS, VC2ModelToComfy, VC2Sigmas
from .sampler import VC2Sampler
from .save_video import VC2SaveVideo
from .text_encode import VC2TextEncode
from .turbo import VC2TurboLoader

NODE_CLASS_MAPPINGS = {
    "VC2_CheckpointLoader": VC2CheckpointLoader,
    "VC2_TextEncode": VC2TextEncode,
    "VC2_EmptyVideoLatent": VC2EmptyVideoLatent,
    "VC2_Sampler": VC2Sampler,
    "VC2_VAEDecode": VC2VAEDecode,
    "VC2_SaveVideo": VC2SaveVideo,
    "VC2_LoraLoader": VC2LoraLoader,
    "VC2_SpatialFineTune": VC2SpatialFineTune,
    "VC2_ModelToComfy": VC2ModelToComfy,
    "VC2_Sigmas": VC2Sigmas,
    "VC2_ConditioningFPS": VC2ConditioningFPS,
    "VC2_LoraToComfyUI": VC2LoraToComfyUI,
    "VC2_TurboLoader": VC2TurboLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VC2_CheckpointLoader": "Load VideoCrafter Checkpoint",
    "VC2_TextEncode": "VC2 Text Encode",
    "VC2_EmptyVideoLatent": "VC2 Empty Video Latent",
    "VC2_Sampler": "VC2 Sampler",
    "VC2_VAEDecode": "VC2 VAE Decode",
    "VC2_SaveVideo": "VC2 Save Video",
    "VC2_LoraLoader": "VC2 LoRA Loader",
    "VC2_SpatialFineTune": "VC2 Spatial Fine-Tune (stage 2)",
    "VC2_ModelToComfy": "VC2 Model to MODEL",
    "VC2_Sigmas": "VC2 Sigmas",
    "VC2_ConditioningFPS": "VC2 Conditioning FPS",
    "VC2_LoraToComfyUI": "VC2 LoRA to ComfyUI format",
    "VC2_TurboLoader": "VC2 T2V-Turbo Loader",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
