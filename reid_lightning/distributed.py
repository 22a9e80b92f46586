"""Putting the per-process shares of an evaluation or prediction back together, in dataset order."""

from __future__ import annotations

import torch
from torch import Tensor


def gather_in_order(trainer, tensors: dict[str, Tensor], *, what: str) -> dict[str, Tensor]:
    """Every process's rows of ``tensors`` (each ``(N_r, ...)``, one of them ``"index"``: the rows' positions in
    the dataset), concatenated over processes and sorted by index, duplicates dropped.

    The shares may differ in size (Lightning's predict sampler does not pad; distributed samplers pad with
    repeated rows): they are padded for the gather and the padding dropped. A collective: call it on every process.
    Raises RuntimeError when the rows do not cover the dataset ``0..N-1`` exactly once.
    """
    if trainer is not None and trainer.world_size > 1:
        index = tensors["index"]
        size = int(trainer.strategy.all_gather(torch.tensor([len(index)], device=index.device)).max())
        padded = {name: torch.cat([t, t.new_full((size - len(t), *t.shape[1:]), -1 if name == "index" else 0)])
                  for name, t in tensors.items()}
        tensors = {name: trainer.strategy.all_gather(t).flatten(0, 1) for name, t in padded.items()}
    real = tensors["index"] >= 0
    tensors = {name: t[real] for name, t in tensors.items()}
    index = tensors["index"]
    order = torch.argsort(index, stable=True)
    index = index[order]
    first = torch.ones_like(index, dtype=torch.bool)
    first[1:] = index[1:] != index[:-1]
    if not torch.equal(index[first], torch.arange(int(first.sum()), device=index.device)):
        raise RuntimeError(f"{what}: the processes' rows do not cover the dataset exactly once")
    return {name: t[order][first] for name, t in tensors.items()}
