"""Detection metrics built from counts that add up across devices.

- :func:`window_vote`: N-BaIoT's majority vote over consecutive rows;
  :func:`smallest_quiet_window`: its per-device window ws*.
- :class:`ConfusionCounts`, :class:`ClassCounts`: additive counts → accuracy, precision, recall
  (TPR), FPR, F1, TPR per attack class.
- :func:`roc_auc_from_histograms`, :func:`roc_curve_from_histograms`: ROC from pooled score
  histograms, with an exact bound on the binning error.
"""

from fediot.core.metrics.confusion import ClassCounts, ConfusionCounts
from fediot.core.metrics.errors import MetricsInputError
from fediot.core.metrics.roc import roc_auc_from_histograms, roc_curve_from_histograms
from fediot.core.metrics.window import smallest_quiet_window, window_vote

__all__ = [
    "ClassCounts",
    "ConfusionCounts",
    "MetricsInputError",
    "roc_auc_from_histograms",
    "roc_curve_from_histograms",
    "smallest_quiet_window",
    "window_vote",
]
