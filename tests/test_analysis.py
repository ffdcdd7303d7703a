"""The synthetic world and the metrics on it: generator clips score high, static, shuffled, degraded and
mismatched clips score low (the validation each metric needs before it judges a model)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from vc2_core.experiments.metrics import (
    COLOUR_CHANCE,
    SHAPE_CHANCE,
    alignment_scores,
    background_colour,
    box3,
    chroma,
    motion_scores,
    nearest_colour,
    object_mask,
    outside_watermark,
    quality_scores,
    saturation,
)
from vc2_core.experiments.world import (
    COLOURS,
    ENTRY_BAND,
    SHAPES,
    VIDEO_COLOURS,
    Motion,
    Thing,
    composite,
    degrade,
    high_quality_image,
    low_quality_video,
    render_clip,
    shape_mask,
    texture_pattern,
)

CLIPS = [low_quality_video(0, i) for i in range(32)]
DIRECTED = CLIPS  # every clip of the world moves in one of the four directions


def test_generator_is_deterministic_and_varied():
    again = low_quality_video(0, 3)
    assert np.array_equal(again.frames, CLIPS[3].frames) and again.caption == CLIPS[3].caption
    assert not np.array_equal(low_quality_video(1, 3).frames, again.frames)
    assert len({c.caption for c in CLIPS}) > 20
    assert {c.motion.kind for c in CLIPS} == {"left", "right", "up", "down"}
    assert {c.motion.speed for c in CLIPS} == {"slowly", "quickly"}
    image = high_quality_image(0, 0)
    assert np.array_equal(image.pixels, high_quality_image(0, 0).pixels) and image.caption.startswith("a sharp photo")
    for clip in CLIPS[:4]:
        assert clip.frames.shape == (8, 32, 32, 3) and clip.frames.dtype == np.float32
        assert 0 <= clip.frames.min() and clip.frames.max() <= 1
        assert (clip.centres >= 0.05).all() and (clip.centres <= 0.95).all()  # the object stays in the frame


def test_tracks_start_at_the_side_they_come_from():
    """Where the object is in the first and last frames says which way it moves (ENTRY_BAND)."""
    for clip in CLIPS:
        axis = 0 if clip.motion.kind in ("left", "right") else 1
        sign = np.sign(clip.motion.velocity[axis])
        first, last = clip.centres[0, axis], clip.centres[-1, axis]
        assert (last - first) * sign > 0
        if sign > 0:  # right or down: from the low side
            assert first <= clip.radius + 0.02 + ENTRY_BAND + 1e-6, clip.caption
        else:
            assert first >= 1 - clip.radius - 0.02 - ENTRY_BAND - 1e-6, clip.caption


def test_images_show_what_videos_never_do():
    images = [high_quality_image(0, i) for i in range(40)]
    video_things = {(c.thing.colour, c.thing.texture) for c in CLIPS}
    assert all(texture == "plain" for _, texture in video_things)
    assert any(p.thing.texture != "plain" for p in images)
    assert any(p.thing.colour not in VIDEO_COLOURS for p in images)
    assert {p.thing.colour for p in images} == set(COLOURS)


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
    assert min(s.presence for s in real) == 1.0 and min(s.one_object for s in real) == 1.0
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
    plain, striped = ([alignment_scores(render_clip(Thing("square", colour, texture), Motion("left"), 4, 32,
                                                    np.random.default_rng(0)).frames, colour, "square").texture_energy
                       for colour in ("red", "blue", "purple")] for texture in ("plain", "striped"))
    assert min(striped) > 2 * max(plain)


@pytest.mark.parametrize("size", [30, 33])
def test_sizes_must_allow_the_degradation(size):
    with pytest.raises(ValueError, match="multiple of 4"):
        low_quality_video(0, 0, size=size)


def _cluttered(frames: np.ndarray, blobs: int, rng: np.random.Generator) -> np.ndarray:
    """Frames with ``blobs`` extra small objects of other colours scattered over them (the clutter of an
    undertrained model)."""
    out = frames.copy()
    for f in range(len(out)):
        for _ in range(blobs):
            colour = np.array(COLOURS[list(COLOURS)[rng.integers(len(COLOURS))]], np.float32)
            centre = (float(rng.uniform(0.1, 0.6)), float(rng.uniform(0.1, 0.6)))
            out[f] = composite(out[f], texture_pattern("plain", 32, colour), shape_mask("circle", 32, centre, 0.07))
    return out


def test_object_count_tells_one_object_from_clutter_and_from_none():
    rng = np.random.default_rng(0)
    one = [motion_scores(c.frames) for c in CLIPS[:12]]
    assert min(s.one_object for s in one) == 1.0 and max(s.object_count for s in one) == 1.0
    clutter = [motion_scores(_cluttered(c.frames, 3, rng)) for c in CLIPS[:12]]
    assert np.mean([s.one_object for s in clutter]) < 0.3 and np.mean([s.object_count for s in clutter]) > 2.0
    empty = [motion_scores(np.repeat(c.frames[:, :2, :2].mean(axis=(1, 2), keepdims=True), 32, 1).repeat(32, 2)
                           + rng.normal(0, 0.01, c.frames.shape).astype(np.float32)) for c in CLIPS[:4]]
    assert max(s.object_count for s in empty) == 0.0 and max(s.one_object for s in empty) == 0.0
    # specks below MIN_OBJECT_AREA (a 1-pixel dot) are not objects
    specked = CLIPS[0].frames.copy()
    specked[:, 3, 3] = (0.1, 0.7, 0.2)
    assert motion_scores(specked).one_object == 1.0


def test_colour_and_shape_classification_far_above_chance_on_the_worlds_own_clips():
    clips = [low_quality_video(0, i) for i in range(96)]
    scores = [alignment_scores(c.frames, c.thing.colour, c.thing.shape) for c in clips]
    assert np.mean([s.colour_correct for s in scores]) == 1.0  # dulled towards grey, the hue stays
    assert np.mean([s.shape_correct for s in scores]) > 0.8 > 2 * SHAPE_CHANCE
    for shape in SHAPES:  # no shape is merely the default answer
        assert np.mean([s.shape_correct for s, c in zip(scores, clips) if c.thing.shape == shape]) > 0.7
    wrong = [alignment_scores(c.frames, [k for k in COLOURS if k != c.thing.colour][i % 6],
                              [k for k in SHAPES if k != c.thing.shape][i % 2]) for i, c in enumerate(clips)]
    assert max(s.colour_correct for s in wrong) == 0.0
    assert np.mean([s.shape_correct for s in wrong]) < 0.15
    assert COLOUR_CHANCE == 1 / 7 and SHAPE_CHANCE == 1 / 3
    for name, rgb in COLOURS.items():  # bright, dull, dark versions of a palette colour keep its name
        grey = np.mean(rgb)
        for version in (np.array(rgb), 0.45 * np.array(rgb) + 0.55 * grey, 0.5 * np.array(rgb)):
            assert nearest_colour(version) == name


def test_the_world_is_the_one_the_shipped_base_was_trained_on():
    """vc2_core/assets/demo_base.safetensors learned this world: its first clips and images stay bit for bit
    the same (frames, captions, tracks), or the demo's targets no longer measure the shipped base."""
    digest = hashlib.sha256()
    for index in range(4):
        clip = low_quality_video(0, index)
        digest.update(clip.frames.tobytes() + clip.caption.encode() + clip.centres.tobytes())
    for index in range(4):
        picture = high_quality_image(0, index)
        digest.update(picture.pixels.tobytes() + picture.caption.encode())
    assert digest.hexdigest() == "bbeb6f52fbc2e419836fe058f90cde9dd28b5c4f6159f7574e58c788181d7777"


def _numpy_box3(image: np.ndarray) -> np.ndarray:  # the hand-written average box3 replaced
    padded = np.pad(image, 1, mode="edge")
    h, w = image.shape
    return sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def test_kornia_in_the_metrics_gives_the_numbers_of_the_numpy_code_it_replaced():
    """box3 (kornia's box_blur) is within 1e-6 of the numpy average and finds the same objects; saturation
    (kornia's rgb_to_hsv) equals (max - min) / (max + 1e-6) bit for bit: the demo's numbers stay the same."""
    frames = np.concatenate([clip.frames for clip in CLIPS[:8]]
                            + [np.repeat(high_quality_image(0, i).pixels[None], 2, axis=0) for i in range(8)])
    for frame in frames:
        distance = np.abs(chroma(frame) - chroma(background_colour(frame))).sum(axis=-1)
        reference = _numpy_box3(distance)
        assert np.abs(box3(distance) - reference).max() < 1e-6
        outside = outside_watermark(frame.shape[0])
        threshold = max(0.1, 0.5 * np.percentile(reference[outside], 99))
        assert np.array_equal(object_mask(frame), (reference > threshold) & outside)
        high, low = frame.max(axis=-1), frame.min(axis=-1)
        assert saturation(frame) == float(((high - low) / (high + 1e-6)).mean())
