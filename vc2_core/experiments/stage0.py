"""Stage 0 of every synthetic run: the stand-ins for the pretrained parts VideoCrafter2 starts from.

- :func:`pretrain_autoencoder`: a VAE trained on the world's pictures (for Stable Diffusion's VAE), and the
  text encoder trained so that every output position carries the caption (for OpenCLIP's text tower);
- :func:`seeded_start`: that model with a fresh UNet drawn from a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..text import END, PAD, START
from ..training.trainer import lr_schedule
from .runs import world_model_config
from .world import all_captions

AUTOENCODER_LR = 2e-3
# A 50-step warm-up, then a cosine decay to 0. At a constant rate the decoder ends with a coloured streak along
# the frame's top-left edge that the object count takes for a second object: 71 % of reconstructed world clips
# have one object after 600 steps at a constant rate, 98 % with the decay (the clips themselves: 100 %).
AUTOENCODER_WARMUP = 50
# Pictures per step. Squares and triangles of low-quality world clips reconstructed as such after 1,500 steps:
# 46 % and 65 % at batch 16, 70 % and 95 % at batch 64 (the clips themselves: 98 %); 3,000 steps at batch 16:
# 52 % and 79 %.
AUTOENCODER_BATCH = 64


def pretrain_autoencoder(path: Path, data: Path, steps: int, text_steps: int, seed: int,
                         show_progress: bool) -> Path:
    """The starting model: the world's architecture with random UNet and text encoder, and a VAE trained to
    reconstruct the world's pictures (VideoCrafter2 starts from Stable Diffusion's trained VAE; a random
    one would make every video noise). The latent is rescaled so that ``scale_factor * z`` has unit
    standard deviation, as SD's 0.18215 does for its VAE. The text encoder, its word embeddings
    :data:`WORD_EMBEDDING_GAIN` times open_clip's initial scale (:func:`distinct_word_embeddings`), is trained
    for ``text_steps`` so that every output position carries the caption (:func:`pretrain_text_encoder`)."""
    from PIL import Image

    from ..checkpoint import save_checkpoint
    from ..model import VideoCrafter

    if path.is_file():
        return path
    torch.manual_seed(seed)
    model = VideoCrafter(world_model_config())
    distinct_word_embeddings(model.text_encoder)
    pretrain_text_encoder(model.text_encoder, text_steps, seed, show_progress)
    files = sorted((data / "stills").glob("*.png")) + sorted((data / "images").glob("*.png"))
    pictures = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32) / 127.5 - 1)
                            .permute(2, 0, 1) for f in files])  # (n, 3, H, W) in [-1, 1]
    vae = model.vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=AUTOENCODER_LR, weight_decay=0.0)
    schedule = lr_schedule(optimizer, "cosine", AUTOENCODER_WARMUP, steps)
    generator = torch.Generator().manual_seed(seed)
    with tqdm(range(steps), desc="autoencoder", unit="step", disable=not show_progress) as bar:
        for _ in bar:
            batch = pictures[torch.randint(len(pictures), (AUTOENCODER_BATCH,), generator=generator)]
            mean, logvar = vae.posterior(batch)
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
            reconstruction = vae.decode(z)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
            loss = reconstruction_loss(reconstruction, batch) + 1e-4 * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(l1=f"{loss.item():.4f}", refresh=False)
    vae.eval()
    with torch.no_grad():
        std = float(vae.posterior(pictures)[0].std())
        gain = 1.0 / (vae.scale_factor * std)  # mean -> gain * mean, so scale_factor * z has unit std
        quant, post = vae.autoencoder.quant_conv, vae.autoencoder.post_quant_conv
        z = quant.out_channels // 2
        quant.weight[:z] *= gain
        quant.bias[:z] *= gain
        quant.bias[z:] += 2 * np.log(gain)  # log-variance of the rescaled latent
        post.weight /= gain
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path)
    return path


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 weighted towards the pixels that differ from the picture's background, plus MSE (both (n, 3, H, W)).

    The world's objects cover a few percent of a frame: plain L1 is minimised early by a grey frame with
    the watermark (objects reconstructed at an IoU of 0.0 after 300 steps); weighted, the objects come
    back (IoU 0.70 at 300 steps on held-out low-quality frames)."""
    background = target.flatten(2).median(dim=2).values[:, :, None, None]  # (n, 3, 1, 1)
    weight = 1 + 8 * (target - background).abs().sum(dim=1, keepdim=True)  # (n, 1, H, W)
    error = (reconstruction - target).abs()
    return (error * weight).mean() / weight.mean() + (reconstruction - target).pow(2).mean()


WORD_EMBEDDING_GAIN = 10.0


@torch.no_grad()
def distinct_word_embeddings(text_encoder: torch.nn.Module) -> None:
    """Scale a random text encoder's word embeddings by :data:`WORD_EMBEDDING_GAIN`.

    At open_clip's initial scale (std 0.02, as the position embeddings) a random transformer's outputs are
    dominated by what every caption shares: "moving left" and "moving right" give outputs with cosine
    0.94 at the direction word, and the UNet can barely tell the directions apart. At ten times that
    scale the differing word's output has cosine near 0 while the other positions still mix their context."""
    embedding = text_encoder.tower.embeddings.token_embedding.weight
    embedding.mul_(WORD_EMBEDDING_GAIN)


def pretrain_text_encoder(text_encoder: torch.nn.Module, steps: int, seed: int, show_progress: bool) -> None:
    """Train the stand-in for OpenCLIP's text tower so that every output position carries the whole caption.

    A trained CLIP spreads a caption's meaning over the positions after its words (the 70-odd padding
    positions that dominate VideoCrafter2's cross-attention). A random encoder does not: there, "moving
    left" and "moving right" differ at one position of 77 (the padding outputs have cosine 0.99), and a UNet
    trained on it never learns which way to move (direction agreement 0.0 after 1,500 steps on a world of
    left and right only). Here every output position learns, through a linear head that is then discarded,
    to tell which of the world's words its caption contains (:func:`all_captions`; "" contains none)."""
    captions = all_captions()
    tokens = text_encoder.tokenizer(captions)  # (n, 77)
    words = sorted({int(t) for t in tokens.flatten().tolist()} - {PAD, START, END})
    index = {word: i for i, word in enumerate(words)}
    targets = torch.zeros(len(captions), len(words))
    for row, caption_tokens in enumerate(tokens.tolist()):
        for token in caption_tokens:
            if token in index:
                targets[row, index[token]] = 1.0
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the head's initial weights from ``seed``, the global RNG untouched
        torch.manual_seed(seed)
        head = torch.nn.Linear(text_encoder.config.width, len(words))
    parameters = [p for p in text_encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=3e-3, weight_decay=0.0)
    text_encoder.train()
    with tqdm(range(steps), desc="text encoder", unit="step", disable=not show_progress) as bar:
        for _ in bar:
            batch = torch.randint(len(captions), (64,), generator=generator)
            logits = head(text_encoder(tokens[batch]))  # (64, 77, words)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, targets[batch][:, None].expand_as(logits))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(bce=f"{loss.item():.4f}", refresh=False)
    text_encoder.eval()


def seeded_start(autoencoder: Path, seed: int, path: Path) -> Path:
    """The stage-0 model (trained VAE, text encoder) with a fresh UNet drawn from ``seed``, at ``path``."""
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..model import VideoCrafter

    if path.is_file():
        return path
    model, _ = load_checkpoint(autoencoder)
    torch.manual_seed(seed)
    model.unet.load_state_dict(VideoCrafter(model.config).unet.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path)
    return path
