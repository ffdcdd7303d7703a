"""Training data, by purpose:

    indexes.py   reading CSV / JSONL indexes and captioned folders into entries (and the lines skipped)
    pixels.py    resize_crop: frames to the training size, in [-1, 1]
    datasets.py  VideoClips and Images: load(index, generator) -> Sample or Skipped, never an exception
    skips.py     Skipped records and the SkipReport that counts them
    stream.py    ItemStream: the keyed, sharded, resumable order of the items one process trains on;
                 stable_seed / draw_generator, the keyed randomness of every item
"""

from .datasets import Images, Sample, VideoClips
from .indexes import IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageEntry, VideoEntry, read_image_index, read_video_index
from .pixels import CROPS, resize_crop
from .skips import MAX_EXAMPLES, REASONS, Skipped, SkipReport
from .stream import Drawn, ItemSource, ItemStream, draw_generator, epoch_permutation, stable_seed

__all__ = ["CROPS", "IMAGE_SUFFIXES", "MAX_EXAMPLES", "REASONS", "VIDEO_SUFFIXES", "Drawn", "ImageEntry", "Images",
           "ItemSource", "ItemStream", "Sample", "SkipReport", "Skipped", "VideoClips", "VideoEntry", "draw_generator",
           "epoch_permutation", "read_image_index", "read_video_index", "resize_crop", "stable_seed"]
