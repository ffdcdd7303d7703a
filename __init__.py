"""ComfyUI entry point of the vc2 node pack: exports the node mappings of nodes/, nothing else.

Install: clone this repository into ComfyUI/custom_nodes/ and `pip install -r requirements.txt`.
The library itself is vc2_core/, which imports without ComfyUI.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
