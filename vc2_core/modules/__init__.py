"""The spatio-temporal UNet and its building blocks; attribute names are the released keys."""

from .attention_layers import CrossAttention, RelativePosition
from .embeddings import timestep_embedding
from .resblocks import Downsample, ResBlock, TemporalConvBlock, Upsample
from .transformers import BasicTransformerBlock, FeedForward, SpatialTransformer, TemporalTransformer
from .unet import DEFAULT_FPS, DeepFeatureCache, UNetBlock, UNetModel

__all__ = [
    "DEFAULT_FPS",
    "DeepFeatureCache",
    "BasicTransformerBlock",
    "CrossAttention",
    "Downsample",
    "FeedForward",
    "RelativePosition",
    "ResBlock",
    "SpatialTransformer",
    "TemporalConvBlock",
    "TemporalTransformer",
    "UNetBlock",
    "UNetModel",
    "Upsample",
    "timestep_embedding",
]
