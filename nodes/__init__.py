"""ComfyUI nodes of the vc2 pack: thin wrappers that validate inputs and call one vc2_core function."""

from .loader import VC2CheckpointLoader

NODE_CLASS_MAPPINGS = {"VC2_CheckpointLoader": VC2CheckpointLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"VC2_CheckpointLoader": "Load VideoCrafter Checkpoint"}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
