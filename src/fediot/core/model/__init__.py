"""The N-BaIoT detector as federated pieces: transform, autoencoder, training, thresholds.

Everything a device computes for the server is a sufficient statistic that adds up across
devices (:class:`ScalerStats`, :class:`ErrorStats`) or a list of float32 weight arrays in a fixed
order (:func:`get_weights` / :func:`set_weights`); no raw row needs to leave a device.
:class:`AutoencoderDetector` composes the same pieces into one sklearn-style estimator.

The names that need torch (the model, its training and scoring, the detector) are loaded on
first use, so importing this package, or its torch-free modules (transform, threshold,
architecture, local_training, numpy_backend), does not import torch: a device without torch
imports them all.
"""

import importlib
from typing import TYPE_CHECKING, Any

from fediot.core.model.architecture import HIDDEN_RATIOS, hidden_sizes
from fediot.core.model.local_training import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SCORE_BATCH_SIZE,
    PrivateTraining,
    TrainReport,
    private_steps_per_epoch,
)
from fediot.core.model.threshold import (
    BIN_WIDTH_LOG10,
    N_ERROR_BINS,
    ErrorStats,
    error_bin_edges,
    threshold_mean_std,
    threshold_quantile,
)
from fediot.core.model.transform import (
    DEFAULT_STD_FLOOR,
    FeatureScaler,
    ModelInputError,
    ScalerStats,
    check_features,
    signed_log1p,
)

if TYPE_CHECKING:
    from fediot.core.model.autoencoder import (
        Autoencoder,
        build_autoencoder,
        check_weights,
        get_weights,
        set_weights,
        weight_shapes,
    )
    from fediot.core.model.detector import AutoencoderDetector, NotFittedError
    from fediot.core.model.training import (
        clipped_gradient_sum,
        reconstruction_errors,
        torch_device,
        train_local,
    )

_NEEDS_TORCH = {
    "fediot.core.model.autoencoder": ("Autoencoder", "build_autoencoder", "check_weights",
                                      "get_weights", "set_weights", "weight_shapes"),
    "fediot.core.model.detector": ("AutoencoderDetector", "NotFittedError"),
    "fediot.core.model.training": ("clipped_gradient_sum", "reconstruction_errors",
                                   "torch_device", "train_local"),
}
_LAZY = {name: module for module, names in _NEEDS_TORCH.items() for name in names}


def __getattr__(name: str) -> Any:
    """Load a torch-backed name on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BIN_WIDTH_LOG10",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SCORE_BATCH_SIZE",
    "DEFAULT_STD_FLOOR",
    "HIDDEN_RATIOS",
    "N_ERROR_BINS",
    "Autoencoder",
    "AutoencoderDetector",
    "ErrorStats",
    "FeatureScaler",
    "ModelInputError",
    "NotFittedError",
    "PrivateTraining",
    "ScalerStats",
    "TrainReport",
    "build_autoencoder",
    "check_features",
    "check_weights",
    "clipped_gradient_sum",
    "error_bin_edges",
    "get_weights",
    "hidden_sizes",
    "private_steps_per_epoch",
    "reconstruction_errors",
    "set_weights",
    "signed_log1p",
    "threshold_mean_std",
    "threshold_quantile",
    "torch_device",
    "train_local",
    "weight_shapes",
]
