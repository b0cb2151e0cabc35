"""Aspect-ratio grouped batches: images in a batch share an orientation, so padding to the batch's largest
image wastes little compute (the detectors pad every batch to one size)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches from ``sampler`` (its order kept) where every full batch comes from one group."""

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        self.sampler = sampler
        self.group_ids = group_ids
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for idx in self.sampler:
            buf = buffers.setdefault(self.group_ids[idx], [])
            buf.append(idx)
            if len(buf) == self.batch_size:
                yield buf
                buffers[self.group_ids[idx]] = []
        leftover = [i for buf in buffers.values() for i in buf]
        for start in range(0, len(leftover), self.batch_size):
            yield leftover[start : start + self.batch_size]

    def __len__(self) -> int:
        counts: dict[int, int] = {}
        for idx in self.sampler:
            counts[self.group_ids[idx]] = counts.get(self.group_ids[idx], 0) + 1
        full = sum(c // self.batch_size for c in counts.values())
        rest = sum(c % self.batch_size for c in counts.values())
        return full + -(-rest // self.batch_size)


def aspect_groups(dataset) -> list[int]:
    """0 for portrait, 1 for landscape or square, from image headers only."""
    groups = []
    for i in range(len(dataset)):
        h, w = dataset.get_height_and_width(i)
        groups.append(int(w >= h))
    return groups
