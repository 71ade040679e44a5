"""Mini-batching (:func:`bbvi_kit.data.batch_loader`, :func:`as_args`)."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from bbvi_kit.data import as_args, batch_loader


def test_batch_loader_covers_every_example_once_per_epoch_reproducibly() -> None:
    data = TensorDataset(torch.arange(10).float().unsqueeze(1), torch.arange(10))
    loader = batch_loader(data, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = [as_args(b) for b in loader]
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert torch.equal(torch.cat([b[0] for b in batches]).squeeze(1).long(), seen)  # rows stay paired
    again = [as_args(b)[1] for b in batch_loader(data, 4, shuffle=True, generator=torch.Generator().manual_seed(0))]
    assert torch.equal(torch.cat(again), seen)
    ordered = torch.cat([as_args(b)[1] for b in batch_loader(data, 4, shuffle=False)])
    assert ordered.tolist() == list(range(10))
