"""DP-SGD in train_local: per-row clipping, the noise's scale, Poisson sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional

from fediot.core.model import (
    Autoencoder,
    ModelInputError,
    PrivateTraining,
    build_autoencoder,
    clipped_gradient_sum,
    get_weights,
    private_steps_per_epoch,
    reconstruction_errors,
    train_local,
)
from fediot.core.model.training import _poisson_batch


def naive_clipped_sum(model: Autoencoder, rows: np.ndarray, clip: float) -> list[np.ndarray]:
    """Σ clip(∇ℓᵢ, C), one row at a time with autograd (ℓᵢ: the row's MSE)."""
    total = [np.zeros(p.shape, np.float64) for p in model.parameters()]
    for row in rows:
        model.zero_grad()
        x = torch.from_numpy(row[None].copy())
        functional.mse_loss(model(x), x).backward()
        grads = [p.grad.detach().numpy().astype(np.float64) for p in model.parameters()
                 if p.grad is not None]
        norm = float(np.sqrt(sum((g * g).sum() for g in grads)))
        for acc, grad in zip(total, grads, strict=True):
            acc += grad * min(1.0, clip / norm)
    model.zero_grad()
    return total


@pytest.mark.parametrize("clip", [0.01, 0.5, 1e6])
def test_per_row_clipping_equals_a_naive_per_row_loop(clip: float) -> None:
    model = build_autoencoder(10, seed=1)
    rows = (np.random.default_rng(0).normal(size=(9, 10)) * 3).astype(np.float32)
    fast = clipped_gradient_sum(model, rows, PrivateTraining(clip, 0.0, np.random.default_rng()))
    slow = naive_clipped_sum(model, rows, clip)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7 * max(clip, 1.0))
    if clip == 0.01:  # every row clipped: the sum's norm is at most 9 C
        assert np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in fast)) <= 9 * clip * 1.0001


def test_noise_has_standard_deviation_sigma_times_c() -> None:
    model = build_autoencoder(115, seed=0)
    private = PrivateTraining(0.5, 2.0, np.random.default_rng())
    noise = np.concatenate([np.concatenate([g.ravel() for g in clipped_gradient_sum(
        model, np.empty((0, 115), np.float32), private)]) for _ in range(3)])
    # 3 × 36,876 draws of N(0, (σC)² = 1): the sample std's standard error is 0.2 %
    assert noise.size > 100_000
    assert abs(noise.std() - 1.0) < 0.02
    assert abs(noise.mean()) < 0.02
    # with rows, the noise is added to the clipped sum, at the same scale
    rows = np.random.default_rng(1).normal(size=(50, 115)).astype(np.float32)
    exact = clipped_gradient_sum(model, rows, PrivateTraining(0.5, 0.0, np.random.default_rng()))
    noisy = clipped_gradient_sum(model, rows, private)
    residual = np.concatenate([(n - e).ravel() for n, e in zip(noisy, exact, strict=True)])
    assert abs(residual.std() - 1.0) < 0.03


def test_poisson_batches_take_each_row_with_probability_q() -> None:
    rows = torch.arange(1000, dtype=torch.float32).unsqueeze(1)
    rng = np.random.default_rng(2)
    seen = np.zeros(1000)
    sizes = []
    for _ in range(2000):
        batch = _poisson_batch(rows, 0.05, rng)
        assert len(set(batch[:, 0].tolist())) == len(batch)  # no row twice in a batch
        seen[batch[:, 0].long().numpy()] += 1
        sizes.append(len(batch))
    # each row: Binomial(2000, 0.05), mean 100, sd 9.7; batch sizes: mean 50, sd 6.9
    assert abs(seen.mean() - 100) < 1 and seen.min() > 60 and seen.max() < 140
    assert abs(np.mean(sizes) - 50) < 1 and 5 < np.std(sizes) < 9


def test_private_training_learns_and_counts_its_steps() -> None:
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(3, 30))
    rows = (rng.normal(size=(2000, 3)) @ basis).astype(np.float32)
    rows = (rows - rows.mean(0)) / rows.std(0)
    model = build_autoencoder(30, seed=0)
    before = reconstruction_errors(model, rows).mean()
    start = get_weights(model)
    report = train_local(model, rows, epochs=10, batch_size=100, learning_rate=1e-2,
                         private=PrivateTraining(1.0, 0.5, np.random.default_rng()))
    assert report.steps == 10 * private_steps_per_epoch(2000, 100) == 200
    assert reconstruction_errors(model, rows).mean() < 0.2 * before  # measured: 0.03
    assert any(not np.array_equal(a, b) for a, b in zip(start, get_weights(model), strict=True))


def test_private_training_needs_the_linear_tanh_stack() -> None:
    class Other(Autoencoder):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 1.0

    model = Other(10, (6, 3))
    with pytest.raises(ModelInputError, match="Linear/Tanh"):
        train_local(model, np.zeros((5, 10), np.float32), epochs=1, learning_rate=1e-3,
                    private=PrivateTraining(1.0, 1.0, np.random.default_rng()))
    with pytest.raises(ModelInputError, match="clip_norm"):
        PrivateTraining(0.0, 1.0, np.random.default_rng())
