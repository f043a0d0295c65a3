"""The autoencoder's layer plan, shared by the PyTorch model and the NumPy device path.

No torch here: a device without torch builds the same plan, checks received weights against the
same shapes and names, and runs the same arithmetic (:mod:`fediot.core.model.numpy_backend`).

For ``d`` input features and encoder widths ``(h1, …, hk)`` the plan is the Linear layers
``d → h1 → … → hk → … → h1 → d`` with a Tanh after every layer except the bottleneck (the last
encoder layer) and the output (the last decoder layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

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


@dataclass(frozen=True)
class LinearLayer:
    """One Linear layer of the plan.

    Parameters
    ----------
    n_in, n_out
        Input and output width (its weight is shaped ``(n_out, n_in)``, as in torch).
    tanh
        Whether a Tanh follows it.
    name
        Its weight's parameter name without ``.weight``, as torch names it (``encoder.0``).
    """

    n_in: int
    n_out: int
    tanh: bool
    name: str


def layer_plan(n_features: int = N_FEATURES,
               hidden: Sequence[int] | None = None) -> tuple[LinearLayer, ...]:
    """The Linear layers in parameter order (default: 115 features, :func:`hidden_sizes`).

    Inside each half (encoder, decoder) a Tanh sits between consecutive Linear layers, so each
    half's last layer is linear; a Linear layer's index in its ``nn.Sequential`` is twice its
    position (the Tanh modules take the odd indices).
    """
    hidden = hidden_sizes(n_features) if hidden is None else tuple(hidden)
    plan = []
    widths = (n_features, *hidden)
    for half, half_widths in (("encoder", widths), ("decoder", widths[::-1])):
        last = len(half_widths) - 2
        for position in range(len(half_widths) - 1):
            plan.append(LinearLayer(half_widths[position], half_widths[position + 1],
                                    tanh=position < last, name=f"{half}.{2 * position}"))
    return tuple(plan)


def parameter_shapes(plan: Sequence[LinearLayer]) -> list[tuple[int, ...]]:
    """Shapes of ``[W1, b1, W2, b2, …]``: what ``weight_shapes(model)`` gives for the model."""
    return [shape for layer in plan for shape in ((layer.n_out, layer.n_in), (layer.n_out,))]


def parameter_names(plan: Sequence[LinearLayer]) -> list[str]:
    """Names of ``[W1, b1, …]`` as ``model.named_parameters()`` gives them."""
    return [f"{layer.name}.{kind}" for layer in plan for kind in ("weight", "bias")]


def check_weight_arrays(
    weights: Sequence[npt.ArrayLike], named_shapes: Sequence[tuple[str, tuple[int, ...]]]
) -> list[npt.NDArray[np.float32]]:
    """Validate ``weights`` against ``(name, shape)`` of every parameter; return them as
    contiguous float32 arrays.

    Raises :class:`ModelInputError` naming the first array whose count, shape or values
    (NaN/inf) are wrong.
    """
    if len(weights) != len(named_shapes):
        raise ModelInputError(
            f"got {len(weights)} weight arrays; the model has {len(named_shapes)} parameters"
        )
    arrays = []
    for index, ((name, shape), weight) in enumerate(zip(named_shapes, weights, strict=True)):
        try:
            array = np.ascontiguousarray(weight, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ModelInputError(f"weight array {index} ({name}) is not numeric: {exc}") from exc
        if array.shape != tuple(shape):
            raise ModelInputError(
                f"weight array {index} ({name}) has shape {array.shape}; "
                f"the model expects {tuple(shape)}"
            )
        if not np.isfinite(array).all():
            raise ModelInputError(f"weight array {index} ({name}) contains NaN or inf")
        arrays.append(array)
    return arrays
