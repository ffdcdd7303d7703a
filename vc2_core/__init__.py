"""vc2_core: VideoCrafter2/VideoCrafter1 text-to-video models, samplers and training, without ComfyUI."""

__version__ = "0.1.0"
