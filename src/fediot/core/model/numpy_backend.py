"""Training and scoring of the autoencoder in NumPy: a device's path when it has no torch.

The same arithmetic as :mod:`fediot.core.model.training` (the PyTorch path): the layer plan of
:func:`~fediot.core.model.architecture.layer_plan`, Tanh, per-element MSE, the explicit
backward pass of ``_forward_backward`` (δ through each layer, weight gradient δᵀa, bias
gradient Σδ), the FedProx term added to the gradients, PyTorch's Adam (L2 weight decay, the
same betas and ε) or plain SGD, and the same batches: :class:`TorchShuffle` draws the very
permutations ``torch.randperm`` draws for the seed (same Mersenne Twister, same Fisher–Yates),
so for the same start both paths take the same steps, equal within float32 rounding (tested:
1e-6 per step). All arithmetic is float32; errors are widened to float64 like the torch path's.

DP-SGD (:class:`~fediot.core.model.local_training.PrivateTraining`) is torch-only.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import N_FEATURES
from fediot.core.model.architecture import (
    check_weight_arrays,
    layer_plan,
    parameter_names,
    parameter_shapes,
)
from fediot.core.model.local_training import (
    ADAM_BETAS,
    ADAM_EPS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_SCORE_BATCH_SIZE,
    OptimizerName,
    PrivateTraining,
    TrainReport,
    TrainSettings,
    positive_int,
    run_epochs,
)
from fediot.core.model.transform import ModelInputError, check_features

Array = npt.NDArray[np.float32]

_UINT32_RANGE: Final[int] = 2**32

_OPENBLAS_SET_THREADS: Final[tuple[str, ...]] = (
    "openblas_set_num_threads", "openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")
"""The thread-count setter's names in OpenBLAS builds (NumPy's wheels prefix and suffix it)."""


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries this process has loaded (Linux), else none."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    return sorted({field for line in maps.splitlines() for field in line.split()[5:]
                   if "openblas" in Path(field).name.lower()})


def single_blas_thread() -> bool:
    """Run NumPy's matrix products on one thread, as a device's torch path does
    (``torch.set_num_threads(1)``): with several threads on cores that other processes
    share, OpenBLAS spins and waits, and one training epoch took 14 s instead of 0.3 s here;
    one thread also keeps the summation order, hence the results, fixed. Returns whether an
    OpenBLAS was found and set (False elsewhere, e.g. NumPy on Apple's Accelerate)."""
    done = False
    for path in _loaded_openblas():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _OPENBLAS_SET_THREADS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(1)
                done = True
                break
    return done


class TorchShuffle:
    """Row permutations, one per call, equal to those ``torch.randperm(n, generator=g)``
    draws in sequence from ``g = torch.Generator().manual_seed(seed)`` on the CPU.

    PyTorch seeds a 32-bit Mersenne Twister with the seed's low 32 bits (as NumPy's legacy
    ``RandomState`` does) and, for n below 2³²/20, swaps position i with i + (u mod (n − i))
    for i = 0 … n − 2, u its next 32-bit output (Fisher–Yates).

    Parameters
    ----------
    seed
        Any integer (only its low 32 bits count, as in PyTorch).
    """

    def __init__(self, seed: int) -> None:
        self._state = np.random.RandomState(int(seed) % _UINT32_RANGE)

    def permutation(self, n: int) -> npt.NDArray[np.int64]:
        """The next permutation of ``range(n)``."""
        if n >= _UINT32_RANGE // 20:  # PyTorch switches to 64-bit draws there
            raise ModelInputError(f"cannot shuffle {n} rows like PyTorch (at most "
                                  f"{_UINT32_RANGE // 20 - 1})")
        order = list(range(n))
        if n > 1:
            draws = self._state.randint(0, _UINT32_RANGE, size=n - 1, dtype=np.uint32)
            targets = (draws.astype(np.int64) % np.arange(n, 1, -1, dtype=np.int64)
                       + np.arange(n - 1, dtype=np.int64))
            for position, target in enumerate(targets.tolist()):  # sequential by nature
                order[position], order[target] = order[target], order[position]
        return np.asarray(order, dtype=np.int64)


class NumpyAutoencoder:
    """The autoencoder of :func:`~fediot.core.model.autoencoder.build_autoencoder` as float32
    NumPy arrays ``[W1, b1, …]`` in the torch model's parameter order and shapes.

    It starts with zero weights: a device always receives the global model first
    (:meth:`set_weights`).

    Parameters
    ----------
    n_features
        Input and output width (default 115).
    hidden
        Encoder widths (default :func:`~fediot.core.model.architecture.hidden_sizes`).
    """

    backend: Final[str] = "numpy"

    def __init__(self, n_features: int = N_FEATURES, hidden: Sequence[int] | None = None
                 ) -> None:
        single_blas_thread()  # one client, one core (as the torch path)
        self.plan = layer_plan(n_features, hidden)
        self.n_features = n_features
        self.hidden = tuple(layer.n_out for layer in self.plan[: len(self.plan) // 2])
        self._named_shapes = list(zip(parameter_names(self.plan),
                                      parameter_shapes(self.plan), strict=True))
        self.weights: list[Array] = [np.zeros(shape, np.float32)
                                     for _, shape in self._named_shapes]

    def check_weights(self, weights: Sequence[npt.ArrayLike]) -> list[Array]:
        """``weights`` validated against the model's shapes (:class:`ModelInputError`)."""
        return check_weight_arrays(weights, self._named_shapes)

    def set_weights(self, weights: Sequence[npt.ArrayLike]) -> None:
        """Copy ``weights`` in; all arrays are validated before any is written."""
        self.weights = [array.copy() for array in self.check_weights(weights)]

    def get_weights(self) -> list[Array]:
        """Copies of the weights, in parameter order."""
        return [array.copy() for array in self.weights]

    def layers(self) -> list[tuple[Array, Array, bool]]:
        """``(weight, bias, tanh_follows)`` of every layer (the arrays themselves)."""
        return [(self.weights[2 * index], self.weights[2 * index + 1], layer.tanh)
                for index, layer in enumerate(self.plan)]

    def train(self, X: npt.ArrayLike, *, private: PrivateTraining | None = None,
              **settings: Any) -> TrainReport:
        """:func:`train_local` on this model (``private`` is refused: DP-SGD needs torch)."""
        if private is not None:
            raise ModelInputError("differentially private training (DP-SGD) needs the "
                                  "PyTorch backend")
        return train_local(self, X, **settings)

    def reconstruction_errors(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """:func:`reconstruction_errors` of ``X`` under this model."""
        return reconstruction_errors(self, X)


def _forward(layers: list[tuple[Array, Array, bool]], batch: Array) -> list[Array]:
    """Every layer's input and, last, the output: ``[batch, a1, …, output]``."""
    activations = [batch]
    out = batch
    for weight, bias, tanh in layers:
        out = out @ weight.T
        out += bias
        if tanh:
            np.tanh(out, out=out)
        activations.append(out)
    return activations


def _gradients(layers: list[tuple[Array, Array, bool]], batch: Array
               ) -> tuple[float, list[Array]]:
    """The batch's MSE and its gradient ``[∂W1, ∂b1, …]`` (``_forward_backward`` of the
    torch path: δ at the output is 2·(x̂ − x)/numel; through a Linear layer δ·W, through a
    Tanh δ − δ·a²)."""
    activations = _forward(layers, batch)
    residual = activations[-1]
    residual -= batch
    flat = residual.reshape(-1)
    loss = float(np.dot(flat, flat)) / flat.size if flat.size else 0.0
    residual *= 2.0 / max(flat.size, 1)
    delta = residual
    grads: list[Array] = [np.empty(0, np.float32)] * (2 * len(layers))
    for index in range(len(layers) - 1, -1, -1):
        grads[2 * index] = delta.T @ activations[index]
        grads[2 * index + 1] = delta.sum(axis=0, dtype=np.float32)
        if index:
            delta = delta @ layers[index][0]
            if layers[index - 1][2]:  # through tanh: d/dz tanh(z) = 1 − tanh(z)²
                activation = activations[index]
                delta -= delta * (activation * activation)
    return loss, grads


Update = Callable[[list[Array], list[Array]], None]
"""Applies one optimizer step to the weights (first) from the gradients (second), in place."""


def _optimizer(name: OptimizerName, learning_rate: float, weight_decay: float) -> Update:
    """PyTorch's Adam (L2 weight decay added to the gradient, bias-corrected moments) or
    plain SGD, element for element as PyTorch's fused CPU kernels compute them."""
    if name == "sgd":
        def sgd(weights: list[Array], grads: list[Array]) -> None:
            for weight, grad in zip(weights, grads, strict=True):
                if weight_decay:
                    grad += weight_decay * weight
                weight -= learning_rate * grad
        return sgd

    beta1, beta2 = ADAM_BETAS
    first: list[Array] = []
    second: list[Array] = []
    step = 0

    def adam(weights: list[Array], grads: list[Array]) -> None:
        nonlocal step
        if not first:
            first.extend(np.zeros_like(weight) for weight in weights)
            second.extend(np.zeros_like(weight) for weight in weights)
        step += 1
        step_size = learning_rate / (1 - beta1**step)
        correction2_sqrt = math.sqrt(1 - beta2**step)
        for weight, grad, mean, square in zip(weights, grads, first, second, strict=True):
            if weight_decay:
                grad += weight_decay * weight
            mean += (grad - mean) * (1 - beta1)  # torch's lerp(mean, grad, 1 − β1)
            square *= beta2
            square += (1 - beta2) * grad * grad
            denominator = np.sqrt(square)
            denominator /= correction2_sqrt
            denominator += ADAM_EPS
            weight -= step_size * mean / denominator

    return adam


def _check_model(model: Any) -> NumpyAutoencoder:
    if not isinstance(model, NumpyAutoencoder):
        raise ModelInputError(f"expected a NumpyAutoencoder; got {type(model).__name__}")
    return model


def train_local(
    model: NumpyAutoencoder,
    X: npt.ArrayLike,
    *,
    epochs: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float,
    optimizer: OptimizerName = "adam",
    weight_decay: float = 0.0,
    prox_mu: float = 0.0,
    global_weights: Sequence[npt.ArrayLike] | None = None,
    seed: int = 0,
    shuffle: bool = True,
    epoch_end: Callable[[int], bool] | None = None,
) -> TrainReport:
    """Train ``model`` in place to reconstruct the rows of ``X`` (MSE): the torch path's
    :func:`fediot.core.model.training.train_local` in NumPy, with the same parameters and
    defaults (``model`` is a :class:`NumpyAutoencoder`; no ``private``).

    Parameters
    ----------
    model
        The :class:`NumpyAutoencoder` to train.
    X
        Transformed rows, float32, finite, ≥ 1 row, width ``model.n_features``.
    epochs, batch_size, learning_rate
        Passes over ``X``, rows per step (default 128), step size.
    optimizer
        ``"adam"`` (default) or ``"sgd"``.
    weight_decay
        L2 penalty added to the gradients (default 0).
    prox_mu
        FedProx μ: adds (μ/2)·‖w − w_global‖² to the loss (default 0).
    global_weights
        ``w_global``; ``None`` uses the weights at the start of the call.
    seed
        Seeds the shuffle (:class:`TorchShuffle`: the torch path's permutations).
    shuffle
        A fresh permutation every epoch (default); ``False`` keeps the row order.
    epoch_end
        Called after each epoch with its 1-based number; True stops training.
    """
    model = _check_model(model)
    data = check_features(X, model.n_features, dtype=np.float32)
    n_rows = len(data)
    if n_rows == 0:
        raise ModelInputError("X has no rows to train on")
    settings = TrainSettings.checked(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
        weight_decay=weight_decay, prox_mu=prox_mu, seed=seed, shuffle=shuffle)
    anchors: list[Array] = []
    if settings.prox_mu > 0:
        anchors = (model.get_weights() if global_weights is None
                   else [a.copy() for a in model.check_weights(global_weights)])
    elif global_weights is not None:
        model.check_weights(global_weights)
    update = _optimizer(settings.optimizer, settings.learning_rate, settings.weight_decay)
    shuffler = TorchShuffle(settings.seed)
    layers = model.layers()

    def batches() -> Iterable[Array]:
        epoch_rows = data[shuffler.permutation(n_rows)] if settings.shuffle else data
        return (epoch_rows[start : start + settings.batch_size]
                for start in range(0, n_rows, settings.batch_size))

    def step(batch: Array) -> float:
        loss, grads = _gradients(layers, batch)
        if anchors:  # ∇ (μ/2)·‖w − w_g‖² = μ·(w − w_g)
            for grad, weight, anchor in zip(grads, model.weights, anchors, strict=True):
                grad += settings.prox_mu * (weight - anchor)
        update(model.weights, grads)
        return loss

    return run_epochs(n_rows, settings.epochs, batches, step, epoch_end)


def reconstruction_errors(model: NumpyAutoencoder, X: npt.ArrayLike,
                          batch_size: int = DEFAULT_SCORE_BATCH_SIZE
                          ) -> npt.NDArray[np.float64]:
    """Per-row reconstruction error ``mean_j (x̂_j − x_j)²`` of transformed rows, as float64
    (float32 arithmetic in chunks of ``batch_size`` rows, default 2048, as the torch path)."""
    model = _check_model(model)
    data = check_features(X, model.n_features, dtype=np.float32)
    batch_size = positive_int(batch_size, "batch_size")
    errors = np.empty(len(data), dtype=np.float64)
    layers = model.layers()
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        squared = _forward(layers, batch)[-1]
        squared -= batch
        np.square(squared, out=squared)
        errors[start : start + len(batch)] = squared.mean(axis=1)
    return errors
