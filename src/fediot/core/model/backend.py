"""Which arithmetic a device trains and scores with: PyTorch or NumPy.

``device_args.backend`` (or ``fediot client --backend``) says ``torch``, ``numpy`` or ``auto``
(the default: torch when it can be imported, else NumPy). Both give the device the same
:class:`LocalModel` face; the NumPy one never imports torch, so a device without torch runs
every FedDetect step but DP-SGD (:func:`resolve_backend` refuses that combination).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from fediot.core.errors import FediotError
from fediot.core.model.local_training import PrivateTraining, TrainReport

BackendName = Literal["torch", "numpy"]
BACKENDS: Final[tuple[str, ...]] = ("auto", "torch", "numpy")
"""The values ``device_args.backend`` accepts."""


class LocalModel(Protocol):
    """What a device does with its model: receive weights, train, score, send weights."""

    @property
    def backend(self) -> str:
        """``"torch"`` or ``"numpy"``."""

    def set_weights(self, weights: Sequence[npt.ArrayLike]) -> None: ...

    def get_weights(self) -> list[npt.NDArray[np.float32]]: ...

    def train(self, X: npt.ArrayLike, *, private: PrivateTraining | None = None,
              **settings: Any) -> TrainReport: ...

    def reconstruction_errors(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]: ...


def torch_importable() -> bool:
    """Whether ``import torch`` can succeed here (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked torch
        return False


def resolve_backend(requested: str, *, private: bool = False) -> BackendName:
    """The backend a device uses for ``requested`` (one of :data:`BACKENDS`).

    ``private``: the run trains with DP-SGD, which only the torch path implements; without
    torch that is one clear :class:`FediotError`.
    """
    if requested not in BACKENDS:
        raise FediotError(f"device backend must be one of {list(BACKENDS)}, got {requested!r}")
    has_torch = torch_importable()
    if requested == "torch" and not has_torch:
        raise FediotError("device backend 'torch' asked for, but torch is not installed here "
                          "(use backend 'numpy' or 'auto', or install torch)")
    if requested == "numpy" or (requested == "auto" and not has_torch):
        if private:
            raise FediotError(
                "differential privacy (privacy_args) trains with DP-SGD, which needs torch; "
                + ("this device has no torch: install it" if not has_torch
                   else "set device_args.backend to torch or auto"))
        return "numpy"
    return "torch"


def local_model(backend: BackendName, n_features: int, *, use_gpu: bool = False,
                who: str = "") -> LocalModel:
    """A device's model (weights set on first use), for ``backend``.

    Parameters
    ----------
    backend
        ``"torch"`` or ``"numpy"`` (see :func:`resolve_backend`).
    n_features
        Input width.
    use_gpu
        Torch only: train and score on a CUDA GPU when one is present (default False).
    who
        Names the device in the warning when ``use_gpu`` finds no GPU (default: none).
    """
    if backend == "numpy":
        from fediot.core.model.numpy_backend import NumpyAutoencoder

        return NumpyAutoencoder(n_features)
    from fediot.core.model.training import TorchLocalModel

    return TorchLocalModel(n_features, use_gpu=use_gpu, who=who)
