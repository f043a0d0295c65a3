"""Arithmetic over many devices' weights a block of reports at a time: the same results as
the straightforward loop over reports, for FedAvg's average and the update norms."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import pytest

from fediot.core.catalog import N_FEATURES
from fediot.core.federated import blockwise
from fediot.core.federated.blockwise import (
    BLOCK_REPORTS,
    ROW_BLOCK,
    layer_blocks,
    squared_distances,
    weighted_sum,
)
from fediot.core.federated.messages import FitReport, SystemStats, Weights
from fediot.core.federated.strategies import weighted_average
from fediot.core.federated.validation import update_norm, update_norm_outliers
from fediot.core.model import build_autoencoder, get_weights
from fediot.core.model.row_weights import RowWeights

NO_COST = SystemStats(0.0, 0.0, 0, 0)
MANY = 2 * BLOCK_REPORTS + 45
"""More reports than two blocks, the last block a partial one."""


@pytest.fixture(scope="module")
def model_weights() -> Weights:
    return get_weights(build_autoencoder(N_FEATURES, seed=3))


def reports_around(current: Weights, count: int, seed: int) -> list[FitReport]:
    """``count`` reports near ``current``, of 1…5,000 rows; every seventh one float64 (the
    checks accept any float type), every fifth one far off."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        scale = 0.5 if i % 5 == 0 else 0.01
        dtype = np.float64 if i % 7 == 0 else np.float32
        weights = [(w + rng.uniform(-scale, scale, w.shape)).astype(dtype) for w in current]
        out.append(FitReport(f"d{i}", weights, int(rng.integers(1, 5_001)), 0.0, NO_COST))
    return out


def reference_average(reports: list[FitReport]) -> list[np.ndarray[Any, Any]]:
    """FedAvg as a plain float64 loop over reports (the implementation before issue 13)."""
    total = sum(r.num_examples for r in reports)
    out = []
    for layer in range(len(reports[0].weights)):
        acc = np.zeros(reports[0].weights[layer].shape, dtype=np.float64)
        for r in reports:
            acc += r.weights[layer].astype(np.float64) * (r.num_examples / total)
        out.append(acc)
    return out


def reference_norm(report: FitReport, current: Weights) -> float:
    return math.sqrt(sum(float(np.sum((w.astype(np.float64) - c.astype(np.float64)) ** 2))
                         for w, c in zip(report.weights, current, strict=True)))


@pytest.mark.parametrize("count", [1, 3, BLOCK_REPORTS, MANY])
def test_weighted_average_equals_the_float64_loop(model_weights: Weights, count: int) -> None:
    reports = reports_around(model_weights, count, seed=count)
    expected = reference_average(reports)
    total = sum(r.num_examples for r in reports)
    exact = weighted_sum([r.weights for r in reports],
                         np.array([r.num_examples / total for r in reports]))
    out = weighted_average(reports)
    assert len(out) == len(expected) == len(exact)
    for got, precise, want in zip(out, exact, expected, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(precise, want, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
        np.testing.assert_array_max_ulp(got, want.astype(np.float32), maxulp=1)


def test_update_norms_equal_the_per_report_loop(model_weights: Weights) -> None:
    reports = reports_around(model_weights, MANY, seed=11)
    got = squared_distances([r.weights for r in reports], model_weights)
    for report, squared in zip(reports, got, strict=True):
        want = reference_norm(report, model_weights)
        assert math.sqrt(squared) == pytest.approx(want, rel=1e-12)
        assert update_norm(report, model_weights) == pytest.approx(want, rel=1e-12)


def test_update_norm_outliers_name_the_far_reports_as_before(model_weights: Weights) -> None:
    reports = {r.client_id: r for r in reports_around(model_weights, MANY, seed=5)}
    norms = {cid: reference_norm(r, model_weights) for cid, r in reports.items()}
    median = float(np.median(list(norms.values())))
    ratio = 3.0
    want = {cid: f"update norm {norm:.4g} > {ratio:g} × the round's median {median:.4g}"
            for cid, norm in norms.items() if not norm <= ratio * median}
    assert want  # every fifth report is ~50× further off than the others
    assert update_norm_outliers(reports, model_weights, ratio) == want


def test_blocks_cover_every_report_once_and_stay_bounded() -> None:
    weights = [[np.full((2, 3), i, np.float32)] for i in range(MANY)]
    seen = []
    for part, rows in layer_blocks(weights, 0):
        assert rows.shape == (part.stop - part.start, 6) and rows.dtype == np.float64
        assert len(rows) <= BLOCK_REPORTS
        seen.extend(rows[:, 0].tolist())
    assert seen == list(range(MANY))
    assert list(layer_blocks([], 0)) == []


def test_mismatched_arrays_raise_rather_than_mix(model_weights: Weights) -> None:
    good = [w.copy() for w in model_weights]
    transposed = [good[0].T.copy(), *good[1:]]  # the same size in another shape
    with pytest.raises(ValueError, match=r"weights\[1\]\[0\] has shape \(115, 86\)"):
        weighted_sum([good, transposed], np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"weights\[1\] holds 15 arrays, the reference 16"):
        squared_distances([good, good[:-1]], model_weights)
    with pytest.raises(ValueError):
        squared_distances([[good[1], *good[1:]]], model_weights)


@pytest.mark.parametrize("count", [1, ROW_BLOCK, MANY])
def test_rows_of_one_matrix_give_the_per_array_results(model_weights: Weights, count: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Stacked training's weights (rows of one matrix, in any order, not all of its rows):
    the same sums as the same numbers in plain lists, read a block of rows at a time."""
    rng = np.random.default_rng(count)
    shapes = tuple(w.shape for w in model_weights)
    centre = np.concatenate([w.ravel() for w in model_weights])
    matrix = (centre + rng.uniform(-0.05, 0.05, (count + 3, centre.size))).astype(np.float32)
    rows = [RowWeights(matrix, int(r), shapes) for r in rng.permutation(count + 3)[:count]]
    plain = [[array.copy() for array in weights] for weights in rows]
    fractions = rng.random(count)
    fractions /= fractions.sum()
    want_sum = weighted_sum(plain, fractions)
    want_squares = squared_distances(plain, model_weights)
    mixed = [*rows[:-1], plain[-1]]  # not all rows: the per-array path, the same numbers
    for array, want in zip(weighted_sum(mixed, fractions), want_sum, strict=True):
        np.testing.assert_allclose(array, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(squared_distances(mixed, model_weights), want_squares,
                               rtol=1e-12)

    def per_array(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rows of one matrix went the per-array way")

    monkeypatch.setattr(blockwise, "layer_blocks", per_array)
    got_sum = weighted_sum(rows, fractions)
    assert [a.shape for a in got_sum] == list(shapes)
    for array, want in zip(got_sum, want_sum, strict=True):
        assert array.dtype == np.float64
        np.testing.assert_allclose(array, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(squared_distances(rows, model_weights), want_squares,
                               rtol=1e-12)


@pytest.mark.parametrize("count", [5, 12, 21])
def test_rows_of_one_matrix_give_the_same_numbers_on_any_number_of_threads(
        model_weights: Weights, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups of rows summed apart and added in order: one thread, two or three threads give
    the same bits (groups of 4 rows here, so several groups and a partial last one), and the
    work ran in the pool's threads."""
    rng = np.random.default_rng(count)
    shapes = tuple(w.shape for w in model_weights)
    centre = np.concatenate([w.ravel() for w in model_weights])
    matrix = (centre + rng.uniform(-0.05, 0.05, (count, centre.size))).astype(np.float32)
    rows = [RowWeights(matrix, int(r), shapes) for r in rng.permutation(count)]
    fractions = rng.random(count)
    fractions /= fractions.sum()
    monkeypatch.setattr(blockwise, "ROW_GROUP", 4)
    results = {}
    seen_threads: set[str] = set()
    real_blocks = blockwise.matrix_blocks

    def noting_thread(*args: Any, **kwargs: Any) -> Any:
        seen_threads.add(threading.current_thread().name)
        return real_blocks(*args, **kwargs)

    monkeypatch.setattr(blockwise, "matrix_blocks", noting_thread)
    for threads in (1, 2, 3):
        monkeypatch.setattr(blockwise, "usable_cores", lambda threads=threads: threads)
        seen_threads.clear()
        results[threads] = (weighted_sum(rows, fractions),
                            squared_distances(rows, model_weights))
        pooled = threads > 1 and count > 4  # more than one group: a pool's threads
        assert all(name.startswith("fediot-blockwise") == pooled for name in seen_threads)
    plain = [[array.copy() for array in weights] for weights in rows]
    for threads in (2, 3):
        for got, want in zip(results[threads][0], results[1][0], strict=True):
            assert np.array_equal(got, want)
        assert np.array_equal(results[threads][1], results[1][1])
    for got, want in zip(results[1][0], weighted_sum(plain, fractions), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(results[1][1], squared_distances(plain, model_weights),
                               rtol=1e-12)
