"""The weights' checks in the server's door: a finite sum as the fast path must accept and
reject exactly what the element-wise test does, with the same messages."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from fediot.core.catalog import N_FEATURES
from fediot.core.federated.messages import (
    DataReport,
    FitReport,
    FitTask,
    ModelState,
    SystemStats,
    Weights,
)
from fediot.core.federated.validation import (
    ReplyContext,
    ReplyRejectedError,
    all_finite,
    check_weights,
    validate_reply,
)
from fediot.core.model import ScalerStats, build_autoencoder, get_weights
from fediot.core.model.row_weights import RowWeights


@pytest.fixture(scope="module")
def model_weights() -> Weights:
    return get_weights(build_autoencoder(N_FEATURES, seed=0))


def rejection(weights: Any, expected: Weights) -> str:
    with pytest.raises(ReplyRejectedError) as caught:
        check_weights(weights, expected, "weights")
    return str(caught.value)


def test_finite_arrays_whose_sum_overflows_are_accepted(model_weights: Weights) -> None:
    big = [w.copy() for w in model_weights]
    big[0][:] = np.finfo(np.float32).max  # every element finite, the sum +inf
    big[2][:] = np.finfo(np.float32).min  # and one −inf
    with np.errstate(over="ignore"):
        assert not np.isfinite(big[0].sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflowing sum must not warn either
        assert check_weights(big, model_weights, "weights") == big
    half = np.full(model_weights[1].shape, 60_000, np.float16)  # float16 overflows at 65,504
    with np.errstate(over="ignore"):
        assert not np.isfinite(half.sum())
    assert check_weights([model_weights[0], half], model_weights[:2], "weights")[1] is half


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, -1])
def test_a_bad_value_in_any_array_is_named_as_before(model_weights: Weights, value: float,
                                                     where: int) -> None:
    bad = [w.copy() for w in model_weights]
    bad[where].flat[-1] = value
    index = where % len(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (rejection(bad, model_weights)
                == f"weights[{index}] holds NaN or infinite values")


def test_infinities_that_cancel_in_the_sum_are_still_rejected() -> None:
    both = np.array([np.inf, -np.inf, 1.0], np.float32)
    assert rejection([both], [both]) == "weights[0] holds NaN or infinite values"


def test_every_other_rejection_keeps_its_message(model_weights: Weights) -> None:
    first = model_weights[0]
    assert rejection(tuple(model_weights)[:-1], model_weights) == (
        f"weights: {len(model_weights) - 1} arrays, the model has {len(model_weights)}")
    assert rejection({"a": 1}, model_weights) == "weights must be a list of arrays, got dict"
    assert rejection([first.tolist(), *model_weights[1:]], model_weights) == (
        "weights[0] is a list, not an array")
    assert rejection([first.T, *model_weights[1:]], model_weights) == (
        "weights[0] has shape (115, 86), the model's is (86, 115)")
    for dtype in (np.int32, np.complex64, np.bool_):
        assert rejection([first.astype(dtype), *model_weights[1:]], model_weights) == (
            f"weights[0] has dtype {np.dtype(dtype)}, expected a float type")
    for dtype in (np.float16, np.float64, np.longdouble):
        check_weights([first.astype(dtype), *model_weights[1:]], model_weights, "weights")


def test_all_finite_agrees_with_the_element_wise_test() -> None:
    rng = np.random.default_rng(7)
    top = float(np.finfo(np.float32).max)
    for trial in range(400):
        dtype = (np.float16, np.float32, np.float64)[trial % 3]
        array = rng.uniform(-1, 1, int(rng.integers(0, 50))).astype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # top is +inf in float16
            for _ in range(int(rng.integers(0, 3))):
                if array.size:
                    array[rng.integers(array.size)] = rng.choice(
                        [np.nan, np.inf, -np.inf, top, -top, 6e4])
            assert all_finite(array) == bool(np.isfinite(array).all()), array
    # a subclass gets the element-wise test: a masked array hides its masked NaN from both
    masked = np.ma.masked_invalid(np.array([1.0, np.nan]))
    assert all_finite(masked) == bool(np.isfinite(masked).all())


def stacked(model_weights: Weights, rows: int = 3) -> tuple[np.ndarray, tuple[Any, ...]]:
    """A matrix of ``rows`` devices' weights near ``model_weights`` (stacked training's)."""
    centre = np.concatenate([w.ravel() for w in model_weights])
    noise = np.random.default_rng(0).uniform(-0.01, 0.01, (rows, centre.size))
    return (centre + noise).astype(np.float32), tuple(w.shape for w in model_weights)


def test_a_stacked_row_is_checked_as_its_row_and_used_as_the_checker_saw_it(
        model_weights: Weights) -> None:
    matrix, shapes = stacked(model_weights)
    sent = RowWeights(matrix, 1, shapes)
    sent[0] = np.full(shapes[0], np.nan, np.float32)  # its own arrays are not what is used
    sent[3] = model_weights[3]
    checked = check_weights(sent, model_weights, "weights")
    assert type(checked) is RowWeights and checked is not sent
    assert checked.matrix is matrix and checked.row == 1
    assert np.array_equal(np.concatenate([a.ravel() for a in checked]), matrix[1])
    assert all(np.shares_memory(a, matrix[1]) for a in checked)


def test_validate_reply_hands_back_the_checked_row(model_weights: Weights) -> None:
    matrix, shapes = stacked(model_weights)
    sent = RowWeights(matrix, 2, shapes)
    sent[5] = np.zeros_like(sent[5])
    task = FitTask(ModelState(model_weights, ScalerStats.empty()), 1,
                   0.001, 1, 8)
    report = FitReport("d", sent, 10, 0.5, SystemStats(0.1, 0.1, 0, 0))
    context = ReplyContext("d", DataReport(train=10, opt=5))
    used = validate_reply("fit", task, report, context)
    assert isinstance(used, FitReport) and used is not report
    assert used.weights is not sent and type(used.weights) is RowWeights
    assert np.array_equal(used.weights[5], matrix[2][
        sum(w.size for w in model_weights[:5]):sum(w.size for w in model_weights[:6])])
    assert (used.client_id, used.num_examples) == ("d", 10)
    plain = FitReport("d", [w.copy() for w in model_weights], 10, 0.5, report.system)
    assert validate_reply("fit", task, plain, context) is plain  # other lists as they came


@pytest.mark.parametrize(("array", "at"), [(0, 0), (1, 0), (7, 5), (15, -1)])
def test_a_bad_value_in_a_stacked_row_names_its_array(model_weights: Weights, array: int,
                                                      at: int) -> None:
    matrix, shapes = stacked(model_weights)
    start = sum(w.size for w in model_weights[:array])
    matrix[1, start + at % model_weights[array].size] = np.inf
    assert (rejection(RowWeights(matrix, 1, shapes), model_weights)
            == f"weights[{array}] holds NaN or infinite values")
    check_weights(RowWeights(matrix, 0, shapes), model_weights, "weights")  # other rows pass


def test_a_stacked_row_that_does_not_fit_the_model_is_rejected(model_weights: Weights) -> None:
    matrix, shapes = stacked(model_weights)
    sent = RowWeights(matrix, 1, shapes)
    sent.row = 7
    assert rejection(sent, model_weights) == "weights: row 7 is outside the matrix's 3 rows"
    sent.row = "1"  # type: ignore[assignment]
    assert rejection(sent, model_weights).startswith("weights: ")
    sent.row, sent.matrix = 1, matrix.astype(np.float64)  # type: ignore[assignment]
    assert "C-contiguous float32 array of" in rejection(sent, model_weights)
    other = get_weights(build_autoencoder(N_FEATURES + 1, seed=0))  # another model's layout
    assert "C-contiguous float32 array of" in rejection(RowWeights(matrix, 1, shapes), other)
