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

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fediot.core.catalog import N_FEATURES
from fediot.core.model.architecture import (
    HIDDEN_RATIOS,
    LinearLayer,
    check_weight_arrays,
    hidden_sizes,
    layer_plan,
)

__all__ = [
    "HIDDEN_RATIOS",
    "Autoencoder",
    "build_autoencoder",
    "check_weights",
    "get_weights",
    "hidden_sizes",
    "set_weights",
    "weight_shapes",
]


def _stack(plan: Sequence[LinearLayer]) -> nn.Sequential:
    """The Linear layers of one half of the plan, each followed by a Tanh where it says so."""
    layers: list[nn.Module] = []
    for layer in plan:
        layers.append(nn.Linear(layer.n_in, layer.n_out))
        if layer.tanh:
            layers.append(nn.Tanh())
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
        plan = layer_plan(n_features, self.hidden)
        self.encoder = _stack(plan[: len(self.hidden)])  # d → h1 → … → hk
        self.decoder = _stack(plan[len(self.hidden) :])

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
    return check_weight_arrays(
        weights, [(name, tuple(param.shape)) for name, param in model.named_parameters()])


def set_weights(model: nn.Module, weights: Sequence[npt.ArrayLike]) -> None:
    """Copy ``weights`` into ``model``; all arrays are validated before any is written."""
    arrays = check_weights(model, weights)
    with torch.no_grad():
        for param, array in zip(model.parameters(), arrays, strict=True):
            param.copy_(torch.from_numpy(array))
