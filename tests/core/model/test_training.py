"""Local training (FedAvg/FedProx client step) and reconstruction errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fediot.core.model import (
    ModelInputError,
    build_autoencoder,
    get_weights,
    reconstruction_errors,
    set_weights,
    train_local,
    training,
)
from fediot.core.model.training import tanh_


def low_rank_rows(rows: int, width: int = 30, rank: int = 3, seed: int = 0) -> np.ndarray:
    """Structured data an autoencoder can learn: a rank-3 subspace plus a little noise."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, width))
    data = rng.normal(size=(rows, rank)) @ basis + 0.05 * rng.normal(size=(rows, width))
    standardised: np.ndarray = ((data - data.mean(0)) / data.std(0)).astype(np.float32)
    return standardised


def distance(model: nn.Module, weights: list[np.ndarray]) -> float:
    return float(
        np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(get_weights(model), weights, strict=True)))
    )


def test_training_reduces_the_loss() -> None:
    X = low_rank_rows(2000)
    model = build_autoencoder(30, seed=0)
    before = reconstruction_errors(model, X).mean()
    report = train_local(model, X, epochs=8, batch_size=64, learning_rate=3e-3)
    after = reconstruction_errors(model, X).mean()
    assert after < 0.3 * before
    assert report.epoch_losses[-1] < report.epoch_losses[0]
    assert report.mean_loss == report.epoch_losses[-1]
    assert report.num_examples == 2000
    assert report.steps == 8 * 32  # 2000 / 64 → 31 full batches and one of 16, per epoch
    assert report.samples_per_second > 0
    assert set(report.to_dict()) >= {"num_examples", "mean_loss", "seconds", "samples_per_second"}


def test_sgd_also_learns() -> None:
    X = low_rank_rows(1000)
    model = build_autoencoder(30, seed=0)
    report = train_local(model, X, epochs=10, batch_size=32, learning_rate=0.05, optimizer="sgd")
    assert report.epoch_losses[-1] < 0.8 * report.epoch_losses[0]


def test_deterministic_for_a_seed() -> None:
    X = low_rank_rows(500)
    runs = []
    for seed in (3, 3, 4):
        model = build_autoencoder(30, seed=0)
        train_local(model, X, epochs=2, batch_size=50, learning_rate=1e-3, seed=seed)
        runs.append(get_weights(model))
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))


def test_unshuffled_training_matches_a_hand_written_loop() -> None:
    X = low_rank_rows(300)
    ours = build_autoencoder(30, seed=5)
    reference = build_autoencoder(30, seed=5)
    train_local(
        ours, X, epochs=2, batch_size=64, learning_rate=1e-2, optimizer="sgd", shuffle=False
    )
    opt = torch.optim.SGD(reference.parameters(), lr=1e-2)
    data = torch.from_numpy(X)
    for _ in range(2):
        for batch in torch.split(data, 64):
            opt.zero_grad()
            loss = nn.functional.mse_loss(reference(batch), batch)
            torch.autograd.backward(loss)
            opt.step()
    for a, b in zip(get_weights(ours), get_weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_prox_term_pulls_towards_the_global_weights() -> None:
    X = low_rank_rows(1000)
    start = get_weights(build_autoencoder(30, seed=0))
    drift = {}
    for mu in (0.0, 1.0, 10.0):
        model = build_autoencoder(30, seed=0)
        train_local(model, X, epochs=3, batch_size=32, learning_rate=3e-3, prox_mu=mu)
        drift[mu] = distance(model, start)
    assert drift[10.0] < drift[1.0] < drift[0.0]
    assert drift[10.0] < 0.5 * drift[0.0]


def test_prox_gradient_matches_the_loss_form() -> None:
    """The gradient shortcut equals autograd of MSE + (μ/2)·‖w − w_g‖² (one SGD step)."""
    X = low_rank_rows(64)
    anchor = get_weights(build_autoencoder(30, seed=9))
    mu, lr = 0.7, 0.1
    ours = build_autoencoder(30, seed=0)
    train_local(ours, X, epochs=1, batch_size=64, learning_rate=lr, optimizer="sgd",
                prox_mu=mu, global_weights=anchor, shuffle=False)
    reference = build_autoencoder(30, seed=0)
    data = torch.from_numpy(X)
    loss = nn.functional.mse_loss(reference(data), data)
    for param, target in zip(reference.parameters(), anchor, strict=True):
        loss = loss + mu / 2 * ((param - torch.from_numpy(target)) ** 2).sum()
    torch.autograd.backward(loss)
    with torch.no_grad():
        for param in reference.parameters():
            assert param.grad is not None
            param.sub_(lr * param.grad)
    for a, b in zip(get_weights(ours), get_weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_prox_defaults_to_the_starting_weights() -> None:
    X = low_rank_rows(400)
    explicit = build_autoencoder(30, seed=0)
    implicit = build_autoencoder(30, seed=0)
    common = dict(epochs=2, batch_size=40, learning_rate=1e-2, prox_mu=0.5)
    train_local(explicit, X, global_weights=get_weights(explicit), **common)  # type: ignore[arg-type]
    train_local(implicit, X, **common)  # type: ignore[arg-type]
    for a, b in zip(get_weights(explicit), get_weights(implicit), strict=True):
        np.testing.assert_array_equal(a, b)


def test_reconstruction_errors_are_per_row_mse() -> None:
    X = low_rank_rows(1000)
    model = build_autoencoder(30, seed=1)
    errors = reconstruction_errors(model, X, batch_size=128)
    with torch.no_grad():
        expected = ((model(torch.from_numpy(X)) - torch.from_numpy(X)) ** 2).mean(dim=1)
    assert errors.dtype == np.float64 and errors.shape == (1000,)
    np.testing.assert_allclose(errors, expected.numpy(), rtol=1e-5)
    # Chunking does not change the result; float64 input is converted.
    widened = reconstruction_errors(model, X.astype(np.float64))
    np.testing.assert_allclose(widened, errors, rtol=1e-6)
    read_only = X.copy()
    read_only.setflags(write=False)
    np.testing.assert_array_equal(reconstruction_errors(model, read_only, batch_size=128), errors)
    assert reconstruction_errors(model, np.zeros((0, 30), np.float32)).shape == (0,)


def test_training_does_not_modify_the_input() -> None:
    X = low_rank_rows(100)
    copy = X.copy()
    train_local(build_autoencoder(30), X, epochs=1, learning_rate=1e-3, shuffle=False)
    np.testing.assert_array_equal(X, copy)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite positive"),
        ({"prox_mu": -1.0}, "prox_mu must be a finite non-negative"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"prox_mu": 1.0, "global_weights": []}, "got 0 weight arrays"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"epochs": 1, "learning_rate": 1e-3, **kwargs}
    with pytest.raises(ModelInputError, match=message):
        train_local(build_autoencoder(30), low_rank_rows(10), **arguments)  # type: ignore[arg-type]


def test_bad_data() -> None:
    model = build_autoencoder(30)
    with pytest.raises(ModelInputError, match="no rows"):
        train_local(model, np.zeros((0, 30), np.float32), epochs=1, learning_rate=1e-3)
    with pytest.raises(ModelInputError, match="29 columns; expected 30"):
        train_local(model, np.zeros((5, 29), np.float32), epochs=1, learning_rate=1e-3)
    X = low_rank_rows(5)
    X[1, 2] = np.nan
    with pytest.raises(ModelInputError, match="row 1, column 2"):
        reconstruction_errors(model, X)
    with pytest.raises(ModelInputError, match="expected an Autoencoder"):
        reconstruction_errors(nn.Linear(30, 30), low_rank_rows(5))  # type: ignore[arg-type]
    set_weights(model, get_weights(model))  # still intact


@pytest.mark.parametrize("variant", ["relu_inside", "tanh_output"])
def test_other_layer_stacks_fall_back_to_autograd(variant: str) -> None:
    """The explicit backprop covers our Linear/Tanh stack only; anything else uses autograd."""
    ours = build_autoencoder(30, seed=2)
    reference = build_autoencoder(30, seed=2)
    for model in (ours, reference):
        if variant == "relu_inside":
            model.encoder[1] = nn.ReLU()
        else:
            model.decoder.append(nn.Tanh())
    X = low_rank_rows(200)
    train_local(
        ours, X, epochs=1, batch_size=50, learning_rate=0.05, optimizer="sgd", shuffle=False
    )
    opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    for batch in torch.split(torch.from_numpy(X), 50):
        opt.zero_grad()
        torch.autograd.backward(nn.functional.mse_loss(reference(batch), batch))
        opt.step()
    for a, b in zip(get_weights(ours), get_weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adam_training_tracks_an_autograd_reference() -> None:
    X = low_rank_rows(640)
    ours = build_autoencoder(30, seed=4)
    reference = build_autoencoder(30, seed=4)
    report = train_local(ours, X, epochs=1, batch_size=64, learning_rate=1e-3, shuffle=False)
    opt = torch.optim.Adam(reference.parameters(), lr=1e-3)
    losses = []
    for batch in torch.split(torch.from_numpy(X), 64):
        opt.zero_grad()
        loss = nn.functional.mse_loss(reference(batch), batch)
        torch.autograd.backward(loss)
        opt.step()
        losses.append(loss.item())
    assert report.mean_loss == pytest.approx(float(np.mean(losses)), rel=1e-5)
    for a, b in zip(get_weights(ours), get_weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_our_autoencoder_takes_the_explicit_backprop_path() -> None:
    # Speed is not asserted in tests; this guards against silently falling back to autograd.
    from fediot.core.model.training import _linear_tanh_plan

    plan = _linear_tanh_plan(build_autoencoder(115))
    assert plan is not None
    assert [tanh for _, tanh in plan] == [True, True, True, False, True, True, True, False]


def test_tanh_is_within_two_ulp_of_torchs_and_keeps_every_elements_bits() -> None:
    """The torch paths' tanh (NumPy's on the CPU): within 2 ulp of torch.tanh, odd, the same
    bits for an element wherever it sits (stacked training relies on it), in place."""
    values = torch.linspace(-12.0, 12.0, 200_001)
    want = torch.tanh(values).numpy()
    got = values.clone()
    assert tanh_(got) is got
    ulp = np.spacing(np.abs(want))
    assert (np.abs(got.numpy() - want) <= 2 * ulp).all()
    assert torch.equal(tanh_(-values), -got)
    shuffled = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(0))]
    for start, stop in [(0, 1), (3, 20), (7, 1031), (1, 200_000)]:
        piece = shuffled[start:stop].clone()
        whole = shuffled.clone()
        assert torch.equal(tanh_(piece), tanh_(whole)[start:stop])
    # what NumPy cannot take in place goes to torch's own
    strided = values.clone()[::2]
    assert torch.equal(tanh_(strided), torch.tanh(values[::2]))


def test_scoring_our_stack_directly_gives_the_modules_numbers_but_for_tanh(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """reconstruction_errors runs our Linear/Tanh stack's layers itself: with torch's tanh
    patched in, the very numbers of the module's forward."""
    X = low_rank_rows(3000)
    model = build_autoencoder(30, seed=2).eval()
    with torch.no_grad():
        rows = torch.from_numpy(X)
        expected = (model(rows) - rows).square().mean(dim=1).numpy()
    np.testing.assert_allclose(reconstruction_errors(model, X), expected, rtol=1e-5)
    monkeypatch.setattr(training, "tanh_", torch.Tensor.tanh_)
    assert np.array_equal(reconstruction_errors(model, X), expected.astype(np.float64))
