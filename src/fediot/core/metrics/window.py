"""N-BaIoT's window vote: a row is an alert when most of the recent rows were flagged.

Meidan et al. (2018) smooth per-row anomaly flags over a window of consecutive instances of one
device's traffic; :func:`window_vote` implements it with a cumulative sum, O(n).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fediot.core.metrics.errors import MetricsInputError


def window_vote(flags: npt.ArrayLike, window: int) -> npt.NDArray[np.bool_]:
    """Majority vote over the trailing ``window`` rows (the row itself and the ``window − 1``
    before it).

    Row ``i`` is flagged when more than half of the rows it votes over are flagged (a tie, only
    possible for an even window, is not an alert). The first ``window − 1`` rows vote over the
    rows seen so far (``i + 1`` rows), so the output has the input's length and ``window = 1`` is
    the identity. Rows must be consecutive rows of one stream (one device's capture, in time
    order): apply the vote per device, not across concatenated files.

    Parameters
    ----------
    flags
        1-D booleans (or 0/1 integers), ``True`` = anomalous.
    window
        Rows per vote, ≥ 1.
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise MetricsInputError(f"window must be a positive integer; got {window!r}")
    array = np.asarray(flags)
    if array.ndim != 1:
        raise MetricsInputError(f"flags must be 1-D; got shape {array.shape}")
    if array.dtype != np.bool_:
        if array.size and not np.isin(array, (0, 1)).all():
            raise MetricsInputError("flags must be booleans or 0/1 values")
        array = array.astype(np.bool_)
    window = int(window)
    if window == 1:
        return array.copy()
    cumulative = np.cumsum(array, dtype=np.int64)
    counts = cumulative.copy()
    counts[window:] -= cumulative[:-window]
    voters = np.minimum(np.arange(1, len(array) + 1), window)
    return np.asarray(2 * counts > voters, dtype=np.bool_)
