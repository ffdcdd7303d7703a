"""Context windows over the frame axis: coverage, exactness of a single window, no seams."""

from __future__ import annotations

import pytest
import torch

from vc2_core.diffusion import ContextWindows, windowed_eps


def test_windows_cover_every_frame_and_end_on_the_last():
    windows = ContextWindows(16, overlap=4).windows(40)
    assert windows[0] == list(range(16))
    assert windows[-1] == list(range(24, 40))  # moved back to end on the last frame
    assert all(len(w) == 16 and w == list(range(w[0], w[0] + 16)) for w in windows)
    assert sorted({f for w in windows for f in w}) == list(range(40))
    assert [w[0] for w in windows] == [0, 12, 24]


def test_looping_windows_wrap_around():
    windows = ContextWindows(8, overlap=2, loop=True).windows(20)
    assert all(len(w) == 8 for w in windows)
    covered = [f for w in windows for f in w]
    assert set(covered) == set(range(20))
    assert any(w[0] > w[-1] for w in windows)  # a window wraps from the end to the start
    assert covered.count(0) >= 2  # the first frame is blended with the end of the video


def test_short_video_is_one_window():
    assert ContextWindows(16, 4).windows(16) == [list(range(16))]
    assert ContextWindows(16, 4).windows(5) == [list(range(5))]


@pytest.mark.parametrize("length, overlap", [(0, 0), (8, 8), (8, -1)])
def test_bad_windows_are_refused(length, overlap):
    with pytest.raises(ValueError, match="context"):
        ContextWindows(length, overlap)


def test_one_window_over_all_frames_is_the_plain_call():
    calls = []

    def eps_fn(x, t):
        calls.append(x.shape[2])
        return torch.sin(x) * t.view(-1, 1, 1, 1, 1)

    x, t = torch.randn(2, 4, 12, 3, 3), torch.tensor([3, 7])
    assert torch.equal(windowed_eps(eps_fn, ContextWindows(12, 4))(x, t), eps_fn(x, t))
    assert torch.equal(windowed_eps(eps_fn, ContextWindows(16, 4))(x, t), eps_fn(x, t))
    assert calls == [12, 12, 12, 12]


def _jumps(video):
    return (video[0, 0, 1:, 0, 0] - video[0, 0, :-1, 0, 0]).abs()


def test_fused_prediction_has_no_seam():
    # A linear ramp over 40 frames; each window's prediction is the ramp minus the window's own mean,
    # so neighbouring windows disagree by a constant (0.2) where they overlap: the kind of offset that
    # shows as a seam. Inside a window the step per frame is 1/40.
    frames, length, overlap = 40, 16, 8
    ramp = torch.arange(frames, dtype=torch.float64).div(frames).view(1, 1, frames, 1, 1)

    def eps_fn(x, t):
        return x - x.mean(dim=2, keepdim=True)

    t = torch.tensor([10])
    windows = ContextWindows(length, overlap)
    fused = windowed_eps(eps_fn, windows)(ramp, t)
    step = 1 / frames
    assert _jumps(fused).max() <= 1.5 * step  # the offsets are blended in gradually, never a jump

    # The same windows averaged with flat weights: a visible seam where a window starts or ends.
    total, count = torch.zeros_like(ramp), torch.zeros(frames, dtype=torch.float64)
    for group in windows.windows(frames):
        total[:, :, group] += eps_fn(ramp[:, :, group], t)
        count[group] += 1
    flat = total / count.view(1, 1, -1, 1, 1)
    assert _jumps(flat).max() > 5 * step  # 7 steps at the seams
