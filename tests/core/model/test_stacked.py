"""Stacked training's rounding against a lone device's (the engine-level tests, against the
sequential engine, are in tests/engines/test_vectorised.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fediot.core.model import build_autoencoder, get_weights, set_weights, train_local
from fediot.core.model.autoencoder import weight_shapes
from fediot.core.model.stacked import (
    SMALL_BATCH_ROWS,
    STACK_ROWS_MULTIPLE,
    StackedSettings,
    train_stacked,
)


def test_stacked_products_of_few_rows_round_as_a_lone_device() -> None:
    """From SMALL_BATCH_ROWS rows on, a device's rows padded in a stack multiply to the same
    bits as its rows alone, for every layer shape, forward (baddbmm) and backward (bmm):
    exact mode recomputes only smaller batches alone."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    shapes = weight_shapes(build_autoencoder(seed=0))[::2]
    k = 6
    for rows in range(SMALL_BATCH_ROWS, STACK_ROWS_MULTIPLE + 1):
        for out_width, in_width in shapes:
            weight = torch.randn(k, out_width, in_width, generator=generator) * 0.1
            bias = torch.randn(k, out_width, generator=generator) * 0.1
            inputs = torch.zeros(k, STACK_ROWS_MULTIPLE, in_width)
            inputs[:, :rows] = torch.randn(k, rows, in_width, generator=generator)
            deltas = torch.zeros(k, STACK_ROWS_MULTIPLE, out_width)
            deltas[:, :rows] = torch.randn(k, rows, out_width, generator=generator)
            forward = torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))
            backward = torch.bmm(deltas, weight)
            for i in range(k):
                alone = torch.addmm(bias[i], inputs[i, :rows], weight[i].t())
                assert torch.equal(forward[i, :rows], alone), (rows, out_width, in_width)
                assert torch.equal(backward[i, :rows], deltas[i, :rows].mm(weight[i]))


@pytest.mark.parametrize(("optimizer", "epochs", "chunk_devices"),
                         [("adam", 1, None), ("adam", 2, 5), ("sgd", 2, None)])
def test_exact_mode_trains_every_device_bit_for_bit_as_alone(optimizer: str, epochs: int,
                                                             chunk_devices: int | None) -> None:
    """Devices of 1 to 20 rows (a batch of a few rows, padded ones, last batches) and a few of
    several batches: each device's trained weights are the very bits train_local gives it."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    counts = [*range(1, 21), 33, 64, 129, 300]
    rows = [rng.standard_normal((n, 115)).astype(np.float32) for n in counts]
    start = get_weights(build_autoencoder(seed=4))
    seeds = [100 + i for i in range(len(counts))]
    stacked = torch.from_numpy(np.concatenate([*rows, np.zeros((1, 115), np.float32)]))
    ends = np.cumsum(counts)
    bounds = [(int(e - n), int(e)) for e, n in zip(ends, counts, strict=True)]
    result = train_stacked(start, stacked, bounds,
                           StackedSettings(epochs, 64, 0.003, optimizer), seeds=seeds,
                           chunk_devices=chunk_devices)
    for device, seed in enumerate(seeds):
        model = build_autoencoder(seed=0)
        set_weights(model, start)
        train_local(model, rows[device], epochs=epochs, batch_size=64, learning_rate=0.003,
                    optimizer=optimizer, seed=seed)
        for got, want in zip(result.weights[device], get_weights(model), strict=True):
            assert np.array_equal(got, want), (counts[device], optimizer, epochs)
