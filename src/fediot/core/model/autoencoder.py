"""The deep autoencoder of N-BaIoT / FedIoT, and its weights as a list of NumPy arrays.

Layout for ``d`` input features (``d = 115`` gives 115 → 86 → 58 → 38 → 29 → 38 → 58 → 86 → 115)::

    encoder: Linear(d, h1) Tanh Linear(h1, h2) Tanh Linear(h2, h3) Tanh Linear(h3, h4)
    decoder: Linear(h4, h3) Tanh Linear(h3, h2) Tanh Linear(h2, h1) Tanh Linear(h1, d)

with ``h_i = round(d · r_i)`` for the ratios (0.75, 0.5, 0.33, 0.25). Rounding follows the FedIoT
seed, which uses Python's ``round`` (half to even): for d = 115 it gives 86, 58, 38, 29, whereas
``int()`` would truncate to 86, 57, 37, 28. As in the seed, the bottleneck code and the output are
linear: inputs are standardised (unbounded, mostly within a few units of 0), so a Tanh on the
output would make every |z| > 1 unreachable and inflate the error of ordinary benign rows.

Weights travel as ``list[np.ndarray]`` (float32) in ``model.parameters()`` order:
``[W1, b1, W2, b2, …, W8, b8]``, each ``W`` shaped ``(out, in)`` as in ``torch.nn.Linear``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fediot.core.catalog import N_FEATURES
from fediot.core.model.transform import ModelInputError

HIDDEN_RATIOS: Final[tuple[float, ...]] = (0.75, 0.5, 0.33, 0.25)
"""Encoder widths as fractions of the input width (N-BaIoT / FedIoT)."""


def hidden_sizes(
    n_features: int = N_FEATURES, ratios: Sequence[float] = HIDDEN_RATIOS
) -> tuple[int, ...]:
    """Encoder widths ``round(n_features · r)``; ``(86, 58, 38, 29)`` for 115 features."""
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ModelInputError(f"n_features must be a positive integer; got {n_features!r}")
    if len(ratios) < 1:
        raise ModelInputError("hidden_ratios must name at least one hidden layer")
    sizes = []
    for ratio in ratios:
        if not (isinstance(ratio, int | float) and 0 < ratio <= 1):
            raise ModelInputError(f"hidden ratio {ratio!r} is not in (0, 1]")
        size = round(n_features * ratio)
        if size < 1:
            raise ModelInputError(
                f"hidden ratio {ratio} gives an empty layer for {n_features} features"
            )
        sizes.append(size)
    return tuple(sizes)


def _stack(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``widths`` with Tanh between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        if index:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """Symmetric Tanh autoencoder with a linear bottleneck and a linear output (float32).

    Parameters
    ----------
    n_features
        Input and output width (default 115).
    hidden
        Encoder widths, e.g. ``(86, 58, 38, 29)``; the decoder mirrors them.
    """

    def __init__(self, n_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden = tuple(hidden)
        widths = (n_features, *self.hidden)
        self.encoder = _stack(widths)
        self.decoder = _stack(widths[::-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reconstruction: torch.Tensor = self.decoder(self.encoder(x))
        return reconstruction


def build_autoencoder(
    n_features: int = N_FEATURES,
    seed: int = 0,
    hidden_ratios: Sequence[float] = HIDDEN_RATIOS,
) -> Autoencoder:
    """A freshly initialised autoencoder (PyTorch's default Linear init), identical for a seed.

    The global torch RNG is left untouched (initialisation runs under a forked RNG state).
    """
    hidden = hidden_sizes(n_features, hidden_ratios)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Autoencoder(n_features, hidden)


def get_weights(model: nn.Module) -> list[npt.NDArray[np.float32]]:
    """Copies of the parameters as float32 arrays, in ``model.parameters()`` order."""
    return [
        param.detach().cpu().numpy().astype(np.float32, copy=True) for param in model.parameters()
    ]


def weight_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    """Shapes of the parameters, in ``model.parameters()`` order."""
    return [tuple(param.shape) for param in model.parameters()]


def check_weights(
    model: nn.Module, weights: Sequence[npt.ArrayLike]
) -> list[npt.NDArray[np.float32]]:
    """Validate ``weights`` against ``model``'s parameters; return them as float32 arrays.

    Raises :class:`ModelInputError` naming the first array whose count, shape or values
    (NaN/inf) are wrong.
    """
    named = list(model.named_parameters())
    if len(weights) != len(named):
        raise ModelInputError(
            f"got {len(weights)} weight arrays; the model has {len(named)} parameters"
        )
    arrays = []
    for index, ((name, param), weight) in enumerate(zip(named, weights, strict=True)):
        try:
            array = np.ascontiguousarray(weight, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ModelInputError(f"weight array {index} ({name}) is not numeric: {exc}") from exc
        if array.shape != tuple(param.shape):
            raise ModelInputError(
                f"weight array {index} ({name}) has shape {array.shape}; "
                f"the model expects {tuple(param.shape)}"
            )
        if not np.isfinite(array).all():
            raise ModelInputError(f"weight array {index} ({name}) contains NaN or inf")
        arrays.append(array)
    return arrays


def set_weights(model: nn.Module, weights: Sequence[npt.ArrayLike]) -> None:
    """Copy ``weights`` into ``model``; all arrays are validated before any is written."""
    arrays = check_weights(model, weights)
    with torch.no_grad():
        for param, array in zip(model.parameters(), arrays, strict=True):
            param.copy_(torch.from_numpy(array))
