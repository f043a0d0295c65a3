"""The N-BaIoT detector as federated pieces: transform, autoencoder, training, thresholds.

Everything a device computes for the server is a sufficient statistic that adds up across
devices (:class:`ScalerStats`, :class:`ErrorStats`) or a list of float32 weight arrays in a fixed
order (:func:`get_weights` / :func:`set_weights`); no raw row needs to leave a device.
:class:`AutoencoderDetector` composes the same pieces into one sklearn-style estimator.
"""

from fediot.core.model.autoencoder import (
    HIDDEN_RATIOS,
    Autoencoder,
    build_autoencoder,
    check_weights,
    get_weights,
    hidden_sizes,
    set_weights,
    weight_shapes,
)
from fediot.core.model.detector import AutoencoderDetector, NotFittedError
from fediot.core.model.threshold import (
    BIN_WIDTH_LOG10,
    N_ERROR_BINS,
    ErrorStats,
    error_bin_edges,
    threshold_mean_std,
    threshold_quantile,
)
from fediot.core.model.training import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SCORE_BATCH_SIZE,
    PrivateTraining,
    TrainReport,
    clipped_gradient_sum,
    private_steps_per_epoch,
    reconstruction_errors,
    torch_device,
    train_local,
)
from fediot.core.model.transform import (
    DEFAULT_STD_FLOOR,
    FeatureScaler,
    ModelInputError,
    ScalerStats,
    check_features,
    signed_log1p,
)

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
