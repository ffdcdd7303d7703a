"""The presets of ``vc2 demo`` and ``vc2 study coupling``: how much of the world each writes, how long each
part trains, and what is sampled (the world's prompts, with seeds that no training draws from)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorldPreset:
    name: str
    videos: int  # low-quality clips
    stills: int  # low-quality stills, for the video bases' joint image training
    images: int  # high-quality images
    autoencoder_steps: int  # stage 0
    text_steps: int  # stage 0's text-encoder training
    batch: int
    sample_steps: int  # DDIM steps of every sampled video
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]  # sampling seeds: a video per prompt and seed


@dataclass(frozen=True)
class DemoPreset(WorldPreset):
    stage1_steps: int  # the base, when it is trained now (--from-scratch; videos, stills and stage 0 too)
    stage2_steps: int  # spatial-only fine-tuning on the images


@dataclass(frozen=True)
class StudyPreset(WorldPreset):
    # The image model's one-object share on the study's 16 samples (seed 0, its EMA): 0.27 at 300 steps without
    # EMA or SNR cap; with them 0.45 at 400, 0.81 at 1,200 and 1,600, 0.88 at 2,000, 0.93 at 2,400.
    image_model_steps: int
    base_steps: int
    perturb_steps: tuple[int, ...]  # the fine-tuning lengths that are scored (checkpoints of one run)


# The base's own world first: the videos' colours, each direction at both speeds, each shape. Then four in
# colours only the high-quality images show (concept composition: a learned motion, an unseen appearance).
DEMO_PROMPTS = ("a red circle moving right slowly", "a green square moving left quickly",
                "a blue triangle moving down slowly", "a yellow circle moving up quickly",
                "a red triangle moving left slowly", "a green circle moving right quickly",
                "a blue square moving up slowly", "a yellow triangle moving down quickly",
                "a purple square moving right quickly", "an orange circle moving left slowly",
                "a cyan triangle moving up slowly", "a purple circle moving down quickly")
DEMO_SEEDS = (1001, 2002)  # no training draws from them
DEMO_PRESETS = {
    "tiny": DemoPreset("tiny", videos=8, stills=4, images=8, autoencoder_steps=5, text_steps=5, batch=2,
                       sample_steps=3, prompts=DEMO_PROMPTS[::4], seeds=DEMO_SEEDS[:1], stage1_steps=4,
                       stage2_steps=3),
    "quick": DemoPreset("quick", videos=1024, stills=256, images=256, autoencoder_steps=1500, text_steps=400,
                        batch=8, sample_steps=25, prompts=DEMO_PROMPTS, seeds=DEMO_SEEDS, stage1_steps=3000,
                        stage2_steps=200),
}

STUDY_PROMPTS = ("a purple circle moving right slowly", "an orange square moving left quickly",
                 "a cyan triangle moving down quickly", "a red circle moving up slowly",
                 "a red square moving right quickly", "a blue circle moving left slowly",
                 "a green triangle moving down slowly", "a yellow circle moving up quickly")
STUDY_PRESETS = {
    "tiny": StudyPreset("tiny", videos=8, stills=4, images=8, autoencoder_steps=5, text_steps=5, batch=2,
                        sample_steps=2, prompts=STUDY_PROMPTS[:2], seeds=(0,), image_model_steps=2, base_steps=3,
                        perturb_steps=(1, 2)),
    "quick": StudyPreset("quick", videos=1024, stills=256, images=256, autoencoder_steps=1500, text_steps=400,
                         batch=8, sample_steps=25, prompts=STUDY_PROMPTS, seeds=(0, 1), image_model_steps=2400,
                         base_steps=1500, perturb_steps=(40, 160)),
    "full": StudyPreset("full", videos=1024, stills=256, images=256, autoencoder_steps=1500, text_steps=400,
                        batch=8, sample_steps=25, prompts=STUDY_PROMPTS, seeds=(0, 1), image_model_steps=2400,
                        base_steps=3000, perturb_steps=(40, 160)),
}


@dataclass(frozen=True)
class Variant:
    """A perturbation of a video base on the high-quality images (the paper's sec. 3.1)."""

    name: str  # the paper's
    base: str  # "F" or "P"
    stage: str  # the vc2 train stage
    lr: float


VARIANTS = (
    Variant("F-Spa-DIR", "F", "spa-dir", 5e-4),
    Variant("F-Temp-DIR", "F", "temp-dir", 5e-4),
    Variant("F-Spa&Temp-DIR", "F", "spa-temp-dir", 5e-4),
    Variant("F-Spa&Temp-LORA", "F", "spa-temp-lora", 2e-3),
    Variant("F-Spa-LORA", "F", "spa-lora", 2e-3),
    Variant("P-Spa-LORA", "P", "spa-lora", 2e-3),
    Variant("F-Temp-LORA", "F", "temp-lora", 2e-3),
    Variant("P-Temp-LORA", "P", "temp-lora", 2e-3),
)
BASES = ("F-base", "P-base")


def study_models(preset: StudyPreset) -> list[tuple[str, int]]:
    """(name, fine-tuning length) of every model the study scores: the bases (length 0), then each variant at
    each length."""
    return [(base, 0) for base in BASES] + [(v.name, length) for v in VARIANTS for length in preset.perturb_steps]
