"""A device's weights as a row of a matrix of many devices' weights (stacked training's):
a weight list like any other, which says which row of which matrix it is."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fediot.core.catalog import N_FEATURES
from fediot.core.model import build_autoencoder, get_weights
from fediot.core.model.row_weights import RowWeights, layout, rows_of_one_matrix

SHAPES = tuple(w.shape for w in get_weights(build_autoencoder(N_FEATURES, seed=0)))
PARAMETERS = layout(SHAPES)[-1]


def matrix(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, PARAMETERS)).astype(np.float32)


def test_its_arrays_are_views_of_its_row_in_the_model_layout() -> None:
    m = matrix(4)
    weights = RowWeights(m, 2, SHAPES)
    assert [a.shape for a in weights] == list(SHAPES) and len(weights) == len(SHAPES)
    assert np.array_equal(np.concatenate([a.ravel() for a in weights]), m[2])
    m[2, 0] = 123.0  # views, not copies
    assert weights[0].flat[0] == 123.0
    assert all(np.shares_memory(a, m[2]) and not np.shares_memory(a, m[1]) for a in weights)


def test_it_pickles_as_a_plain_list_without_the_matrix() -> None:
    m = matrix(50)
    weights = RowWeights(m, 7, SHAPES)
    data = pickle.dumps(weights)
    assert len(data) < 2 * PARAMETERS * 4  # one row's numbers, not 50
    back = pickle.loads(data)
    assert type(back) is list
    assert all(np.array_equal(a, b) for a, b in zip(back, weights, strict=True))


@pytest.mark.parametrize(("bad", "message"), [
    (lambda m: m.astype(np.float64), "C-contiguous float32"),
    (lambda m: m[:, :-1], "C-contiguous float32"),
    (lambda m: np.asfortranarray(m), "C-contiguous float32"),
    (lambda m: m[0], "C-contiguous float32"),
    (lambda m: m.tolist(), "C-contiguous float32"),
])
def test_a_matrix_it_cannot_be_a_row_of_is_refused(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RowWeights(bad(matrix(3)), 0, SHAPES)  # type: ignore[operator]


@pytest.mark.parametrize("row", [-1, 3, 10**9])
def test_a_row_outside_the_matrix_is_refused(row: int) -> None:
    with pytest.raises(ValueError, match=f"row {row} is outside the matrix's 3 rows"):
        RowWeights(matrix(3), row, SHAPES)


def test_a_row_that_is_not_a_whole_number_is_refused() -> None:
    with pytest.raises(TypeError):
        RowWeights(matrix(3), 1.5, SHAPES)  # type: ignore[arg-type]


def test_rows_of_one_matrix_only_when_every_list_is_a_row_of_the_same_one() -> None:
    m, other = matrix(6), matrix(6, seed=1)
    rows = [RowWeights(m, r, SHAPES) for r in (4, 0, 5)]
    found = rows_of_one_matrix(rows)
    assert found is not None
    assert found[0] is m and found[1].tolist() == [4, 0, 5] and found[2] == SHAPES
    assert rows_of_one_matrix([]) is None
    assert rows_of_one_matrix([*rows, RowWeights(other, 1, SHAPES)]) is None
    assert rows_of_one_matrix([*rows, list(RowWeights(m, 1, SHAPES))]) is None
    assert rows_of_one_matrix([list(rows[0]), *rows]) is None


def test_every_row_gives_what_rows_one_by_one_give() -> None:
    m = matrix(6, seed=3)
    for rows in (None, [4, 0, 5], []):
        many = RowWeights.every_row(m, list(SHAPES), rows)
        wanted = range(6) if rows is None else rows
        assert [w.row for w in many] == list(wanted)
        for weights, row in zip(many, wanted, strict=True):
            one = RowWeights(m, row, SHAPES)
            assert type(weights) is RowWeights and weights.matrix is m
            assert weights.shapes == SHAPES and isinstance(weights.shapes, tuple)
            assert [a.shape for a in weights] == [a.shape for a in one]
            assert all(np.array_equal(a, b) and np.shares_memory(a, m[row])
                       for a, b in zip(weights, one, strict=True))
            assert type(pickle.loads(pickle.dumps(weights))) is list
    with pytest.raises(ValueError, match="row 6 is outside"):
        RowWeights.every_row(m, SHAPES, [1, 6])
    with pytest.raises(ValueError, match="C-contiguous float32"):
        RowWeights.every_row(m.astype(np.float64), SHAPES)
