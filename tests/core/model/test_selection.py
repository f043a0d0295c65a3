"""Model selection on validation loss: the plateau rule, and the estimator's early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from fediot.core.features.warmup import WarmupRule
from fediot.core.model import AutoencoderDetector
from fediot.core.model.selection import PlateauStop
from fediot.core.model.transform import ModelInputError


def test_plateau_keeps_the_lowest_loss_and_stops_after_patience() -> None:
    tracker = PlateauStop(patience=2, min_delta=0.1)
    assert tracker.update(1, 1.0)          # first step is the best so far
    assert tracker.update(2, 0.8)          # 20 % better: an improvement
    assert tracker.update(3, 0.79)         # better by less than 10 %: the best moves, but...
    assert tracker.best_step_ == 3 and not tracker.should_stop
    assert not tracker.update(4, 0.9)      # ...and a second step without improvement stops
    assert tracker.should_stop and tracker.best_step_ == 3 and tracker.best_loss_ == 0.79


def test_patience_zero_never_stops_but_still_tracks_the_best() -> None:
    tracker = PlateauStop(patience=0)
    for step, loss in enumerate([3.0, 2.0, 2.5, 2.4, 2.3, 2.2, 2.1], start=1):
        tracker.update(step, loss)
    assert not tracker.should_stop and tracker.best_step_ == 2


def test_replay_reaches_the_same_state() -> None:
    history = [(1, 1.0), (2, 0.9), (3, 0.95), (4, 0.97)]
    live = PlateauStop(patience=2)
    for step, loss in history:
        live.update(step, loss)
    again = PlateauStop.replay(2, 0.01, history)
    assert (again.best_step_, again.best_loss_, again.should_stop) == (
        live.best_step_, live.best_loss_, live.should_stop) == (2, 0.9, True)


@pytest.mark.parametrize(("patience", "min_delta"), [(-1, 0.01), (2, 1.0), (2, -0.1),
                                                     (2, float("nan")), (True, 0.01)])
def test_bad_settings_are_refused(patience: int, min_delta: float) -> None:
    with pytest.raises(ModelInputError):
        PlateauStop(patience, min_delta)
    with pytest.raises(ModelInputError):
        AutoencoderDetector(patience=patience, min_delta=min_delta)


def test_a_non_finite_loss_is_refused() -> None:
    with pytest.raises(ModelInputError, match="step 3"):
        PlateauStop().update(3, float("nan"))


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 8)) @ rng.normal(size=(8, 115))
    rows = np.abs(base) * 10 + 5
    rows[:, :45] = np.abs(rows[:, :45]) + 3  # source weights well above the warm-up limit
    return rows.astype(np.float32)


def test_early_stopping_keeps_the_best_epoch_of_the_opt_rows() -> None:
    train, opt = _rows(600, 0), _rows(300, 1)
    stopped = AutoencoderDetector(epochs=60, patience=2, min_delta=0.05, seed=3).fit(train, opt)
    report = stopped.train_report_
    assert report is not None and report.epochs < 60  # the plateau ended it
    losses = stopped.validation_losses_
    assert len(losses) == report.epochs
    assert stopped.best_epoch_ == int(np.argmin(losses)) + 1
    # the kept weights are the best epoch's: their opt error is that epoch's loss
    kept = float(stopped.score_samples(opt).mean())
    assert kept == pytest.approx(min(losses), rel=1e-5)
    full = AutoencoderDetector(epochs=6, early_stopping=False, seed=3).fit(train, opt)
    assert full.train_report_ is not None and full.train_report_.epochs == 6
    assert full.best_epoch_ is None and full.validation_losses_ == ()


def test_warm_up_rows_are_dropped_from_train_and_opt_only() -> None:
    train, opt = _rows(300, 0), _rows(200, 1)
    train[[0, 5]] = 0.0
    train[[0, 5], 0] = 1.0  # MI_dir weights at every λ: the first packet of a new source
    from fediot.core.features.warmup import SOURCE_WEIGHT_COLUMNS
    train[[0, 5], SOURCE_WEIGHT_COLUMNS[0]] = 1.0
    train[[0, 5], SOURCE_WEIGHT_COLUMNS[1]] = 1.0
    opt[7, list(SOURCE_WEIGHT_COLUMNS)] = 1.0
    fitted = AutoencoderDetector(epochs=2, seed=0).fit(train, opt)
    assert fitted.warmup_dropped_ == (2, 1)
    assert fitted.train_report_ is not None and fitted.train_report_.num_examples == 298
    assert fitted.opt_stats_ is not None and fitted.opt_stats_.n == 199
    kept = AutoencoderDetector(epochs=2, seed=0, warmup=None).fit(train, opt)
    assert kept.warmup_dropped_ == (0, 0) and kept.opt_stats_ is not None
    assert kept.opt_stats_.n == 200
    # scoring never drops a row
    assert len(fitted.score_samples(train)) == 300
    with pytest.raises(ModelInputError, match="WarmupRule"):
        AutoencoderDetector(warmup="on")  # type: ignore[arg-type]
    assert AutoencoderDetector(warmup=WarmupRule(2.0)).get_params()["warmup"] == {
        "min_history": 2.0, "settle_seconds": 100.0}
