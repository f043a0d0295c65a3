"""The NumPy device path against the PyTorch path: same plan, shuffle, gradients, optimizer
steps, training and scores.

Why the comparison is split: the two paths sum matrix products in different orders (MKL in
torch, OpenBLAS in NumPy), so their gradients differ by float32 rounding (~1e-9 here). SGD
carries that through unchanged (whole runs agree within 1e-6 after every step), but Adam
divides each gradient by its own running RMS: a coordinate whose gradient is near ε = 1e-8
turns a 1e-11 difference into a 1e-6 step difference, and a trajectory then drifts. So Adam is
checked step by step (gradients at the same weights, then the update from the same gradients),
each within 1e-6, and over whole runs by its losses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fediot.core.model import (
    ModelInputError,
    build_autoencoder,
    get_weights,
    reconstruction_errors,
    set_weights,
    train_local,
    weight_shapes,
)
from fediot.core.model import numpy_backend as nb
from fediot.core.model.architecture import layer_plan, parameter_names, parameter_shapes
from fediot.core.model.local_training import ADAM_BETAS, ADAM_EPS
from fediot.core.model.training import _forward_backward, _linear_layers, _linear_tanh_plan

TOLERANCE = 1e-6


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # a device's setting (DeviceClient); keeps torch's sums fixed


def device_rows(rows: int, width: int = 115, seed: int = 0) -> np.ndarray:
    """Standardised rows of a low-rank structure plus noise, like scaled benign traffic."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(rows, 5)) @ rng.normal(size=(5, width))
    data += 0.1 * rng.normal(size=(rows, width))
    scaled: np.ndarray = ((data - data.mean(0)) / data.std(0)).astype(np.float32)
    return scaled


def twin(n_features: int = 115, seed: int = 1) -> tuple[torch.nn.Module, nb.NumpyAutoencoder]:
    torch_model = build_autoencoder(n_features, seed=seed)
    numpy_model = nb.NumpyAutoencoder(n_features)
    numpy_model.set_weights(get_weights(torch_model))
    return torch_model, numpy_model


def max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("n_features", [115, 30, 7])
def test_the_plan_is_the_torch_models(n_features: int) -> None:
    model = build_autoencoder(n_features)
    plan = layer_plan(n_features, model.hidden)
    assert parameter_shapes(plan) == weight_shapes(model)
    assert parameter_names(plan) == [name for name, _ in model.named_parameters()]
    assert [layer.tanh for layer in plan] == [tanh for _, tanh in _linear_tanh_plan(model)]
    assert nb.NumpyAutoencoder(n_features).hidden == model.hidden


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1, 2**32 - 1, 2**32 + 5, 2**40 + 7])
def test_the_shuffle_draws_torch_randperms(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    shuffle = nb.TorchShuffle(seed)
    for n in (1, 2, 3, 10, 129, 5_000, 70_001, 2):  # one generator, consecutive draws
        expected = torch.randperm(n, generator=generator).numpy()
        np.testing.assert_array_equal(shuffle.permutation(n), expected)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_gradients_equal_at_every_step(weight_decay: float) -> None:
    """Along a torch training run: at each step's weights, both paths' MSE and gradients."""
    torch_model, numpy_model = twin()
    X = device_rows(640)
    plan = _linear_tanh_plan(torch_model)
    assert plan is not None
    tanh_after = [tanh for _, tanh in plan]
    for epoch in range(3):
        numpy_model.set_weights(get_weights(torch_model))
        layers = _linear_layers(plan)
        for batch in np.array_split(X, 10):
            with torch.no_grad():
                loss, pairs = _forward_backward(layers, tanh_after, torch.from_numpy(batch),
                                                per_row=False)
                expected = []
                for delta, activation in reversed(pairs):
                    expected += [(delta.t() @ activation).numpy(), delta.sum(0).numpy()]
            ours_loss, ours = nb._gradients(numpy_model.layers(), batch)
            assert ours_loss == pytest.approx(loss, rel=TOLERANCE)
            assert max_difference(ours, expected) < TOLERANCE
        train_local(torch_model, X, epochs=1, batch_size=64, learning_rate=3e-3,
                    weight_decay=weight_decay, seed=epoch)


@pytest.mark.parametrize(("optimizer", "weight_decay"),
                         [("adam", 0.0), ("adam", 1e-2), ("sgd", 0.0), ("sgd", 1e-2)])
def test_optimizer_steps_equal_from_the_same_gradients(optimizer: str,
                                                       weight_decay: float) -> None:
    """200 updates from the same gradient sequence, with gradients spanning 1e-9…1 (where
    Adam's ε matters and where it does not): PyTorch's fused kernels and ours, step by step."""
    rng = np.random.default_rng(3)
    shapes = [(20, 30), (20,), (30, 20), (30,)]
    weights = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in weights]
    lr = 3e-3 if optimizer == "adam" else 0.05
    reference = (torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                                  weight_decay=weight_decay, fused=True)
                 if optimizer == "adam" else
                 torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, fused=True))
    update = nb._optimizer(optimizer, lr, weight_decay)  # type: ignore[arg-type]
    for _ in range(200):
        grads = [(rng.normal(size=shape) * 10.0 ** rng.uniform(-9, 0, size=shape))
                 .astype(np.float32) for shape in shapes]
        for param, grad in zip(params, grads, strict=True):
            param.grad = torch.from_numpy(grad.copy())
        reference.step()
        update(weights, [g.copy() for g in grads])
        assert max_difference(weights, [p.detach().numpy() for p in params]) < TOLERANCE


@pytest.mark.parametrize(("prox_mu", "weight_decay", "batch_size"),
                         [(0.0, 0.0, 50), (1.0, 1e-3, 64), (0.01, 0.0, 1000)])
def test_sgd_runs_equal_after_every_epoch(prox_mu: float, weight_decay: float,
                                          batch_size: int) -> None:
    """Whole shuffled SGD runs with FedProx; batch_size 1000 > rows: one step per epoch, so
    the check runs after every single step."""
    torch_model, numpy_model = twin(seed=4)
    X = device_rows(700, seed=1)
    anchor = get_weights(build_autoencoder(115, seed=9))
    snapshots: dict[str, list[list[np.ndarray]]] = {"torch": [], "numpy": []}
    reports = []
    for name, train, model in (("torch", train_local, torch_model),
                               ("numpy", nb.train_local, numpy_model)):
        def after_epoch(_: int, name: str = name, model: object = model) -> bool:
            weights = (model.get_weights() if isinstance(model, nb.NumpyAutoencoder)
                       else get_weights(model))  # type: ignore[arg-type]
            snapshots[name].append(weights)
            return False

        reports.append(train(model, X, epochs=12, batch_size=batch_size, learning_rate=0.05,  # type: ignore[operator]
                             optimizer="sgd", weight_decay=weight_decay, prox_mu=prox_mu,
                             global_weights=anchor if prox_mu else None, seed=7,
                             epoch_end=after_epoch))
    assert len(snapshots["torch"]) == len(snapshots["numpy"]) == 12
    for ours, theirs in zip(snapshots["numpy"], snapshots["torch"], strict=True):
        assert max_difference(ours, theirs) < TOLERANCE
    assert reports[1].steps == reports[0].steps
    np.testing.assert_allclose(reports[1].epoch_losses, reports[0].epoch_losses, rtol=1e-5)


@pytest.mark.parametrize(("prox_mu", "weight_decay"), [(0.0, 0.0), (0.5, 1e-4)])
def test_adam_runs_follow_the_same_losses(prox_mu: float, weight_decay: float) -> None:
    """Whole Adam runs (4 shuffled epochs, FedProx): the first step within 1e-5, the epoch
    losses within 1e-4 relative (the trajectories drift apart by float32 rounding amplified
    at near-zero gradients: see the module's docstring)."""
    X = device_rows(1500, seed=2)
    reports, weights = [], []
    for train, model in ((train_local, twin(seed=5)[0]), (nb.train_local, twin(seed=5)[1])):
        start = model.get_weights() if isinstance(model, nb.NumpyAutoencoder) \
            else get_weights(model)  # type: ignore[arg-type]
        reports.append(train(model, X, epochs=4, learning_rate=3e-3, prox_mu=prox_mu,  # type: ignore[operator]
                             weight_decay=weight_decay, seed=11))
        weights.append(model.get_weights() if isinstance(model, nb.NumpyAutoencoder)
                       else get_weights(model))  # type: ignore[arg-type]
        assert max_difference(weights[-1], start) > 1e-2  # it trained
    np.testing.assert_allclose(reports[1].epoch_losses, reports[0].epoch_losses, rtol=1e-4)
    assert max_difference(weights[0], weights[1]) < 1e-2


def test_scores_equal() -> None:
    torch_model, numpy_model = twin(seed=6)
    X = device_rows(5000, seed=3) * 3  # beyond the training range: large errors too
    theirs = reconstruction_errors(torch_model, X)
    ours = nb.reconstruction_errors(numpy_model, X)
    assert ours.dtype == np.float64 and ours.shape == (5000,)
    np.testing.assert_allclose(ours, theirs, rtol=TOLERANCE)
    chunked = nb.reconstruction_errors(numpy_model, X, batch_size=128)
    np.testing.assert_allclose(chunked, ours, rtol=TOLERANCE)  # BLAS kernels vary with rows
    assert numpy_model.reconstruction_errors(X[:0]).shape == (0,)


def test_weights_travel_both_ways() -> None:
    torch_model, numpy_model = twin(seed=8)
    nb.train_local(numpy_model, device_rows(100), epochs=1, learning_rate=1e-2)
    set_weights(torch_model, numpy_model.get_weights())
    np.testing.assert_array_equal(get_weights(torch_model)[3], numpy_model.weights[3])
    copy = numpy_model.get_weights()
    copy[0][:] = 0
    assert numpy_model.weights[0].any()  # a copy, not the model's own array


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
def test_the_same_argument_errors(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"epochs": 1, "learning_rate": 1e-3, **kwargs}
    X = device_rows(10, width=30)
    for train, model in ((train_local, build_autoencoder(30)),
                         (nb.train_local, nb.NumpyAutoencoder(30))):
        with pytest.raises(ModelInputError, match=message):
            train(model, X, **arguments)  # type: ignore[operator]


def test_bad_weights_and_data_are_named() -> None:
    model = nb.NumpyAutoencoder(30)
    shapes = parameter_shapes(model.plan)
    with pytest.raises(ModelInputError, match=r"weight array 2 \(encoder.2.weight\) has shape"):
        model.set_weights([np.zeros(s, np.float32) for s in shapes[:2]]
                          + [np.zeros((3, 3), np.float32)]
                          + [np.zeros(s, np.float32) for s in shapes[3:]])
    broken = [np.zeros(s, np.float32) for s in shapes]
    broken[5][0] = np.inf
    with pytest.raises(ModelInputError, match=r"weight array 5 .* NaN or inf"):
        model.set_weights(broken)
    with pytest.raises(ModelInputError, match="no rows"):
        nb.train_local(model, np.zeros((0, 30), np.float32), epochs=1, learning_rate=1e-3)
    with pytest.raises(ModelInputError, match="expected a NumpyAutoencoder"):
        nb.reconstruction_errors(build_autoencoder(30), device_rows(5, width=30))  # type: ignore[arg-type]
    with pytest.raises(ModelInputError, match="needs the PyTorch backend"):
        model.train(device_rows(5, width=30), epochs=1, learning_rate=1e-3,
                    private=object())  # type: ignore[arg-type]
