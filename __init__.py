"""ComfyUI entry point of the vc2 node pack: exports the node mappings of nodes/, nothing else.

Install: clone this repository into ComfyUI/custom_nodes/ and `pip install -r requirements.txt`.
The library itself is vc2_core/, which imports without ComfyUI.
"""

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

# ComfyUI imports this file as a package (custom_nodes/<folder>). pytest imports it too, and without a
# package when the checkout's folder is not a Python name (e.g. tmp.Xy12); then there are no nodes to export.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
