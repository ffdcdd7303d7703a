"""The item stream: keyed randomness, skip reports, and the keyed, sharded, resumable order of items."""

from __future__ import annotations

import json
import multiprocessing

import pytest
import torch
from data_media import all_clips, good_clips, make_media, same_items, stream_items

from vc2_core.training.data import (
    REASONS,
    Images,
    ItemStream,
    Sample,
    Skipped,
    SkipReport,
    VideoClips,
    VideoEntry,
    draw_generator,
    epoch_permutation,
    read_image_index,
)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    return make_media(tmp_path_factory.mktemp("media"))


# ---- randomness and reports --------------------------------------------------------------------------------


def test_draw_generator_is_stable_and_keyed():
    value = torch.randint(0, 2**31, (3,), generator=draw_generator(1234, 5, "augment")).tolist()
    assert value == torch.randint(0, 2**31, (3,), generator=draw_generator(1234, 5, "augment")).tolist()
    # a stable hash (not Python's salted hash()): the same numbers in every process and every run
    assert draw_generator(1234, 5, "augment").initial_seed() == 1897482755546913473
    seeds = {draw_generator(s, k, p).initial_seed() for s in (0, 1) for k in (0, 1) for p in ("augment", "noise")}
    assert len(seeds) == 8
    assert epoch_permutation(3, 0, 10).sort().values.tolist() == list(range(10))
    assert not torch.equal(epoch_permutation(3, 0, 10), epoch_permutation(3, 1, 10))


def test_skip_report():
    report = SkipReport()
    for item in [Skipped("clips/bad.mp4", "unreadable", "Invalid data found when processing input"),
                 Skipped("clips/gone.mp4", "missing"), Skipped("x.mp4", "unreadable", "moov atom not found")]:
        report.add(item)
    for _ in range(37):
        report.add(object())  # a usable item
    assert report.summary().splitlines() == [
        "skipped 3 of 40 items (7.5%): missing 1, unreadable 2",
        "  clips/bad.mp4: unreadable (Invalid data found when processing input)",
        "  clips/gone.mp4: missing", "  x.mp4: unreadable (moov atom not found)"]
    restored = SkipReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert restored == report
    many = SkipReport()
    for n in range(30):
        many.add(Skipped(f"index.jsonl:{n}", "bad index line", "bad JSON"))
    restored.merge(many)
    assert restored.seen == 70 and restored.counts == {"unreadable": 2, "missing": 1, "bad index line": 30}
    assert len(restored.examples) == 20 and restored.skipped == 33
    assert SkipReport().summary() == "skipped 0 of 0 items (0.0%)"
    assert set(REASONS) == {"missing", "unreadable", "too short", "no caption", "bad index line"}


# ---- the stream --------------------------------------------------------------------------------------------


def test_stream_skips_bad_items_and_fills_every_batch(media):
    dataset = all_clips(media)
    with ItemStream(dataset, seed=3, local_batch=3) as stream:
        batches = [stream.next_batch() for _ in range(4)]
        position, report = stream.position, stream.report
    assert [len(b) for b in batches] == [3, 3, 3, 3]
    assert all(isinstance(d.sample, Sample) and d.sample.source.split("/")[-1].startswith("good")
               for b in batches for d in b)
    keys = [d.key for b in batches for d in b]
    assert keys == sorted(keys) and keys[-1] == position - 1
    reasons = {4: "too short", 5: "unreadable", 6: "unreadable", 7: "missing"}  # entry index -> reason
    n = len(dataset)
    drawn = [int(epoch_permutation(3, p // n, n)[p % n]) for p in range(position)]
    expected: dict[str, int] = {}
    for index in drawn:
        if index in reasons:
            expected[reasons[index]] = expected.get(reasons[index], 0) + 1
    assert report.seen == position and report.counts == expected and report.skipped == position - 12
    assert [d.key for b in batches for d in b] == [p for p, i in enumerate(drawn) if i not in reasons]


def test_resume_continues_exactly(media):
    dataset = good_clips(media, frame_stride=(1, 4), crop="random")
    straight = stream_items(dataset, 5, seed=1)
    with ItemStream(dataset, seed=1, local_batch=2) as first:
        head = [first.next_batch() for _ in range(3)]
        position = first.position
    with ItemStream(dataset, seed=1, local_batch=2, position=position) as second:
        tail = [second.next_batch() for _ in range(2)]
    assert all(same_items(a, b) for a, b in zip(straight, head + tail))
    assert position == 6 and [d.key for d in tail[0]] == [6, 7]  # 4 items: the stream crosses into epoch 1


def test_two_processes_deal_the_global_batch_of_one(media):
    dataset = Images(read_image_index(media["images"])[0][2:], height=8, width=8, crop="random")  # no corrupt.png
    one = stream_items(dataset, 4, local_batch=4)
    ranks = [stream_items(dataset, 4, local_batch=2, rank=r, world_size=2) for r in range(2)]
    for k in range(4):
        assert same_items(one[k], ranks[0][k] + ranks[1][k])
    with ItemStream(dataset, seed=7, local_batch=2, rank=1, world_size=2) as stream:
        stream.next_batch()
        assert stream.position == 4  # rank 1 owns positions 2, 3 (chunk 1), then 6, 7, ...


def test_workers_give_the_same_items(media):
    dataset = all_clips(media, frame_stride=(1, 3), crop="random")
    plain = ItemStream(dataset, seed=5, local_batch=2)
    children = set(multiprocessing.active_children())
    expected = torch.rand(1, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    workers = ItemStream(dataset, seed=5, local_batch=2, num_workers=2)
    for _ in range(3):
        assert same_items(plain.next_batch(), workers.next_batch())
    assert torch.equal(torch.rand(1), expected)  # the global RNG is untouched
    assert plain.position == workers.position and plain.report == workers.report
    assert len(set(multiprocessing.active_children()) - children) == 2
    workers.close()
    assert not set(multiprocessing.active_children()) - children
    with pytest.raises(RuntimeError, match="closed"):
        workers.next_batch()


def test_a_dataset_of_broken_files_raises(media):
    clips = media["clips"]
    entries = [VideoEntry(clips / name, name) for name in ("zero.mp4", "random.mp4", "gone.mp4", "short.mp4")]
    stream = ItemStream(VideoClips(entries, frames=8, height=16, width=16), seed=0, local_batch=2)
    with pytest.raises(ValueError, match="no usable items") as error:
        stream.next_batch()
    assert "skipped 4 of 4 items (100.0%): missing 1, unreadable 2, too short 1" in str(error.value)


def test_stream_arguments_are_checked(media):
    dataset = good_clips(media)
    for settings, message in [({"local_batch": 0}, "local_batch"), ({"rank": 2, "world_size": 2}, "rank"),
                              ({"position": -1}, "position")]:
        with pytest.raises(ValueError, match=message):
            ItemStream(dataset, **{"seed": 0, "local_batch": 2, **settings})
