"""The synthetic world and the metrics on it: generator clips score high, static, shuffled, degraded and
mismatched clips score low (the validation each metric needs before it judges a model)."""

from __future__ import annotations

import numpy as np
import pytest

from vc2_core.analysis.metrics import alignment_scores, motion_scores, quality_scores
from vc2_core.training.synthetic import (
    DIRECTIONS,
    SHAPES,
    VIDEO_COLOURS,
    Motion,
    Thing,
    degrade,
    high_quality_image,
    low_quality_video,
    render_clip,
)

CLIPS = [low_quality_video(0, i) for i in range(32)]
DIRECTED = [c for c in CLIPS if c.motion.kind in DIRECTIONS]


def test_generator_is_deterministic_and_varied():
    again = low_quality_video(0, 3)
    assert np.array_equal(again.frames, CLIPS[3].frames) and again.caption == CLIPS[3].caption
    assert not np.array_equal(low_quality_video(1, 3).frames, again.frames)
    assert len({c.caption for c in CLIPS}) > 20 and len(DIRECTED) >= 10
    assert {c.motion.kind for c in CLIPS} >= {"left", "right", "up", "down", "bounces", "grows", "rotates"}
    image = high_quality_image(0, 0)
    assert np.array_equal(image.pixels, high_quality_image(0, 0).pixels) and image.caption.startswith("a sharp photo")
    for clip in CLIPS[:4]:
        assert clip.frames.shape == (8, 32, 32, 3) and clip.frames.dtype == np.float32
        assert 0 <= clip.frames.min() and clip.frames.max() <= 1
        assert (clip.centres >= 0.05).all() and (clip.centres <= 0.95).all()  # the object stays in the frame


def test_images_show_what_videos_never_do():
    images = [high_quality_image(0, i) for i in range(40)]
    video_things = {(c.thing.colour, c.thing.texture) for c in CLIPS}
    assert all(texture == "plain" for _, texture in video_things)
    assert any(t.texture != "plain" for p in images for t in p.things)
    assert any(t.colour not in VIDEO_COLOURS for p in images for t in p.things)
    assert any(len(p.things) == 2 for p in images)


def test_motion_metrics_follow_the_prompt_and_catch_static_and_shuffled_clips():
    real = [motion_scores(c.frames, c.motion.kind, c.motion.speed) for c in DIRECTED]
    assert np.mean([s.direction_agreement for s in real]) > 0.95
    assert 0.85 < np.mean([s.speed_ratio for s in real]) < 1.15
    static = [motion_scores(np.repeat(c.frames[:1], len(c.frames), 0), c.motion.kind, c.motion.speed)
              for c in DIRECTED]
    assert max(s.motion_magnitude for s in static) < 0.005 and max(s.direction_agreement for s in static) == 0
    reversed_ = [motion_scores(c.frames[::-1], c.motion.kind, c.motion.speed) for c in DIRECTED]
    assert np.mean([s.direction_agreement for s in reversed_]) < -0.9
    rng = np.random.default_rng(0)
    shuffled = [motion_scores(c.frames[rng.permutation(len(c.frames))], c.motion.kind, c.motion.speed)
                for c in DIRECTED]
    assert np.mean([s.track_jitter for s in shuffled]) > 5 * np.mean([s.track_jitter for s in real])
    flashing = [c.frames * np.where(np.arange(len(c.frames)) % 2, 0.6, 1.0)[:, None, None, None] for c in DIRECTED]
    assert np.mean([motion_scores(f).flicker for f in flashing]) > 3 * np.mean([s.flicker for s in real])
    assert min(s.presence for s in real) == 1.0
    blank = [c.frames.copy() for c in DIRECTED]  # the object flashes out in every other frame
    for frames in blank:
        frames[1::2] = frames[1::2, :1, :1]  # the top-left pixel's colour (background) everywhere
    assert max(motion_scores(f, "right", "slowly").presence for f in blank) == 0.5


def test_quality_metrics_separate_sharp_vivid_clean_from_degraded():
    rng = np.random.default_rng(0)
    for clip in DIRECTED[:8]:
        clean = render_clip(clip.thing, clip.motion, 8, 32, rng)
        good, bad = quality_scores(clean.frames), quality_scores(degrade(clean.frames, rng))
        assert good.sharpness > 1.2 * bad.sharpness
        assert good.saturation > 1.5 * bad.saturation
        assert good.watermark < 0.2 < 0.6 < bad.watermark
    images = [quality_scores(high_quality_image(0, i).pixels[None]) for i in range(16)]
    videos = [quality_scores(c.frames) for c in CLIPS[:16]]
    assert min(s.sharpness for s in images) > max(s.sharpness for s in videos)
    assert max(s.watermark for s in images) < 0.2 and min(s.watermark for s in videos) > 0.6


def test_alignment_metrics_prefer_the_prompted_colour_shape_and_texture():
    right_colour, wrong_colour, right_shape, wrong_shape = [], [], [], []
    for i, clip in enumerate(CLIPS[:24]):
        other_colour = [c for c in VIDEO_COLOURS if c != clip.thing.colour][i % 3]
        right_colour.append(alignment_scores(clip.frames, clip.thing.colour, clip.thing.shape).colour_match)
        wrong_colour.append(alignment_scores(clip.frames, other_colour, clip.thing.shape).colour_match)
        clean = render_clip(clip.thing, clip.motion, 8, 32, np.random.default_rng(i))
        right_shape.append(alignment_scores(clean.frames, clip.thing.colour, clip.thing.shape).shape_match)
        wrong_shape += [alignment_scores(clean.frames, clip.thing.colour, s).shape_match
                        for s in SHAPES if s != clip.thing.shape]
    assert np.mean(right_colour) > np.mean(wrong_colour) + 0.15
    assert np.mean(right_shape) > np.mean(wrong_shape) + 0.1
    plain, striped = ([alignment_scores(render_clip(Thing("square", colour, texture), Motion("grows"), 4, 32,
                                                    np.random.default_rng(0)).frames, colour, "square").texture_energy
                       for colour in ("red", "blue", "purple")] for texture in ("plain", "striped"))
    assert min(striped) > 2 * max(plain)


@pytest.mark.parametrize("size", [30, 33])
def test_sizes_must_allow_the_degradation(size):
    with pytest.raises(ValueError, match="multiple of 4"):
        low_quality_video(0, 0, size=size)
