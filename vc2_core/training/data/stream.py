"""The item stream: the items one process trains on, keyed, sharded and resumable.

Position p of the endless stream is item ``perm_e[p % N]`` of epoch ``e = p // N``; positions come in
chunks of ``local_batch`` and process r of W owns chunks r, r + W, ... A skipped item is reported and
the process takes its next position, so a batch is always full; once every item of the dataset has
been skipped with none usable in between, the stream raises. Each item's randomness comes from
``draw_generator(seed, p, purpose)``, so an item is treated the same whichever process, batch or
worker loads it, and ``position`` alone resumes a stream exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from .skips import Skipped, SkipReport

Tensor = torch.Tensor


class ItemSource(Protocol):
    """What a stream draws from: the media datasets, a latent cache's items, samples held in memory."""

    def __len__(self) -> int: ...

    def load(self, index: int, generator: torch.Generator) -> object:
        """Item ``index`` (whatever the source holds), or a Skipped saying why not."""


@dataclass(frozen=True)
class Drawn:
    key: int  # the stream position it was drawn at (unique over epochs)
    sample: object  # what the source loaded: a Sample (media), a CachedSample (latents)


def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (blake2b of their JSON; not Python's per-process ``hash``)."""
    digest = hashlib.blake2b(json.dumps(list(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def draw_generator(seed: int, key: int, purpose: str) -> torch.Generator:
    """The CPU generator for one purpose ("augment", "noise", "dropout", ...) of the item drawn at position ``key``."""
    return torch.Generator().manual_seed(stable_seed(seed, purpose, key))


def epoch_permutation(seed: int, epoch: int, size: int) -> Tensor:
    """(size,) int64: the item order of one epoch of the stream."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(stable_seed(seed, "epoch", epoch)))


class _Positions(torch.utils.data.Dataset):
    """Map-style view of the stream for DataLoader workers: position p -> (p, item index, the item drawn there)."""

    def __init__(self, dataset: ItemSource, seed: int):
        self.dataset, self.seed = dataset, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def index_of(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.dataset))
        if epoch != self._epoch:  # positions arrive in increasing order: one permutation is cached
            self._epoch, self._perm = epoch, epoch_permutation(self.seed, epoch, len(self.dataset))
        return int(self._perm[offset])

    def __getitem__(self, position: int) -> tuple[int, int, object]:
        index = self.index_of(position)
        return position, index, self.dataset.load(index, draw_generator(self.seed, position, "augment"))


class _OwnedPositions:
    """This process's positions from ``start`` on, endless: chunks c of ``local_batch`` with c % world == rank."""

    def __init__(self, start: int, local_batch: int, rank: int, world_size: int):
        self.start, self.local_batch, self.rank, self.world_size = start, local_batch, rank, world_size

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while True:
            chunk = position // self.local_batch
            if chunk % self.world_size == self.rank:
                yield position
                position += 1
            else:  # jump to the start of this process's next chunk
                position = (chunk + (self.rank - chunk) % self.world_size) * self.local_batch


def _identity(item: object) -> object:
    return item


class ItemStream:
    """The items one process trains on, in a seeded order, failures skipped and reported (see the module doc).

    ``dataset`` is an :class:`ItemSource` (the media datasets, a latent cache, samples in memory).
    ``position`` is where to continue (a previous stream's ``position``).
    """

    def __init__(self, dataset: ItemSource, *, seed: int, local_batch: int, rank: int = 0,
                 world_size: int = 1, position: int = 0, num_workers: int = 0, report: SkipReport | None = None):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        if local_batch < 1:
            raise ValueError(f"local_batch must be at least 1; got {local_batch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size); got rank {rank} of {world_size}")
        if position < 0 or num_workers < 0:
            raise ValueError(f"position and num_workers must be >= 0; got {position} and {num_workers}")
        self.dataset, self.local_batch = dataset, local_batch
        self.report = report if report is not None else SkipReport()
        self._position = position
        self._failed: set[int] = set()  # item indices skipped since the last usable item
        source = _Positions(dataset, seed)
        owned = _OwnedPositions(position, local_batch, rank, world_size)
        self._loader: torch.utils.data.DataLoader | None = None
        if num_workers > 0:
            self._loader = torch.utils.data.DataLoader(
                source, batch_size=None, sampler=owned, num_workers=num_workers, collate_fn=_identity,
                persistent_workers=True, generator=torch.Generator().manual_seed(stable_seed(seed, "workers", rank)))
            self._items: Iterator | None = iter(self._loader)  # the generator keeps the global RNG untouched
        else:
            self._items = map(source.__getitem__, owned)

    @property
    def position(self) -> int:
        """The first stream position this process has not consumed: where a resumed stream continues."""
        return self._position

    def next_batch(self) -> list[Drawn]:
        """The next ``local_batch`` usable items of this process, in stream order."""
        if self._items is None:
            raise RuntimeError("this ItemStream is closed")
        batch: list[Drawn] = []
        while len(batch) < self.local_batch:
            position, index, item = next(self._items)
            self._position = position + 1
            self.report.add(item)
            if isinstance(item, Skipped):
                self._failed.add(index)
                if len(self._failed) == len(self.dataset):
                    raise ValueError(f"the dataset has no usable items: all {len(self.dataset)} were skipped, "
                                     f"none loaded\n{self.report.summary()}")
                continue
            self._failed.clear()
            batch.append(Drawn(position, item))
        return batch

    def close(self) -> None:
        """Stop the worker processes (dropping the loader's iterator shuts them down); the stream is then closed."""
        self._items, self._loader = None, None

    def __enter__(self) -> ItemStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
