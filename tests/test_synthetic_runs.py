"""The synthetic world's stand-ins for pretrained parts: the autoencoder's loss sees the objects, and the random
text encoder tells the words of a caption apart."""

from __future__ import annotations

import numpy as np
import torch

from vc2_core.experiments.runs import world_model_config
from vc2_core.experiments.stage0 import distinct_word_embeddings, pretrain_text_encoder, reconstruction_loss
from vc2_core.experiments.world import low_quality_video
from vc2_core.model import VideoCrafter


def test_reconstruction_loss_punishes_a_frame_without_its_object():
    frames = np.stack([low_quality_video(0, i).frames[0] for i in range(8)])  # (8, 32, 32, 3)
    target = torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1
    background = target.flatten(2).median(dim=2).values[:, :, None, None].expand_as(target)
    no_object = torch.where((target - background).abs().sum(1, keepdim=True) > 0.3, background, target)
    # objects cover ~15 % of a frame: noise of 0.1 costs plain L1 more than losing them does
    noisy = target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    plain = lambda r: float((r - target).abs().mean())  # noqa: E731
    # plain L1 prefers losing the object to a little noise everywhere; the weighted loss does not
    assert plain(no_object) < plain(noisy)
    assert float(reconstruction_loss(no_object, target)) > float(reconstruction_loss(noisy, target))


def _direction_word_similarity(text_encoder) -> float:
    with torch.no_grad():
        out = text_encoder.encode(["a red circle moving right slowly", "a red circle moving left slowly"])
    tokens = text_encoder.tokenizer(["a red circle moving right slowly"])[0].tolist()
    position = tokens.index(text_encoder.tokenizer(["right"])[0].tolist()[1])  # after the start token
    return float(torch.nn.functional.cosine_similarity(out[0, position], out[1, position], dim=0))


def test_word_embedding_gain_makes_directions_distinct():
    torch.manual_seed(0)
    text_encoder = VideoCrafter(world_model_config()).text_encoder
    assert _direction_word_similarity(text_encoder) > 0.85  # open_clip's init scale: "left" ~ "right"
    distinct_word_embeddings(text_encoder)
    assert _direction_word_similarity(text_encoder) < 0.6


def _padding_difference(text_encoder) -> float:
    """How far apart the padding outputs of two captions that differ only in direction are (relative L2)."""
    with torch.no_grad():
        out = text_encoder.encode(["a red circle moving right slowly", "a red circle moving left slowly"])
    pads = out[:, 10:]  # every caption of the world is shorter than 10 tokens
    return float((pads[0] - pads[1]).norm() / pads[0].norm())


def test_text_pretraining_spreads_the_caption_over_the_padding():
    torch.manual_seed(0)
    text_encoder = VideoCrafter(world_model_config()).text_encoder
    distinct_word_embeddings(text_encoder)
    before = _padding_difference(text_encoder)
    pretrain_text_encoder(text_encoder, steps=100, seed=0, show_progress=False)
    after = _padding_difference(text_encoder)
    assert before < 0.1  # random: the padding hardly depends on the caption
    assert after > 2 * before


