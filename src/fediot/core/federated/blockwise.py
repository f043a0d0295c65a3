"""Arithmetic over many devices' weights at once: a block of reports per layer, or a block of
whole reports when they are rows of one matrix.

A round at thousands of virtual devices hands the server thousands of weight lists (16 float32
arrays, 36,876 numbers each for the autoencoder). Looping over them array by array in Python
costs more than the arithmetic; stacking them all would take 9,000 × 36,876 × 8 B ≈ 2.7 GB in
float64. In between, each layer is copied for at most :data:`BLOCK_REPORTS` reports at a time
into one float64 matrix (one row per report) and handled with one numpy call per block.

The products are ``np.einsum``'s, not BLAS's: its loops run on this thread in a fixed order, so
a result does not depend on the BLAS thread count, and a multi-threaded OpenBLAS on cores that
other processes share (2 cores, loaded) took 2–6× longer for the same matrix–vector product.
Rows of one matrix are read by one thread per usable core instead, in groups of
:data:`ROW_GROUP` rows whose partial sums are added in group order: the same numbers whatever
the thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from fediot.core.federated.meter import usable_cores
from fediot.core.model.row_weights import rows_of_one_matrix, split_row

T = TypeVar("T")

BLOCK_REPORTS = 64
"""Reports stacked at once: a block takes 64 × the largest layer (115 × 86 numbers) × 8 B ≈
5 MB, within a cache (64 to 256 ran as fast; 8 and 16 slower)."""

ROW_BLOCK = 16
"""Whole weight lists stacked at once when they are rows of one matrix
(:class:`~fediot.core.model.row_weights.RowWeights`, what stacked training returns): 16 ×
36,876 numbers × 8 B ≈ 4.7 MB, about a layer block's size."""

ROW_GROUP = 512
"""Rows of one matrix a thread reads as one unit of work; each group's sum starts from zero
and the groups' sums are added in order, so the result does not depend on the threads. At
9,000 rows (a 1.3 GB matrix) two threads took 0.05 s where one took 0.10 s for the distances
(measured on this 2-core machine)."""


def _by_groups(work: Callable[[slice], T], rows: int) -> list[T]:
    """``work`` of every :data:`ROW_GROUP` slice of ``range(rows)``, in order, on one thread
    per usable core (numpy releases the GIL inside its loops)."""
    groups = [slice(start, min(start + ROW_GROUP, rows)) for start in range(0, rows, ROW_GROUP)]
    threads = min(usable_cores(), len(groups))
    if threads <= 1:
        return [work(group) for group in groups]
    with ThreadPoolExecutor(threads, thread_name_prefix="fediot-blockwise") as pool:
        return list(pool.map(work, groups))


def layer_blocks(weights: Sequence[Sequence[npt.NDArray[Any]]], layer: int,
                 block: int = BLOCK_REPORTS) -> Iterator[tuple[slice, npt.NDArray[np.float64]]]:
    """Array ``layer`` of every weight list in ``weights``, flattened to float64 rows, ``block``
    (default :data:`BLOCK_REPORTS`) lists at a time: ``(which lists, their rows)``.

    The rows live in one buffer reused for every block: use (or change) them before asking for
    the next block. An array whose shape differs from the first list's raises ``ValueError``.
    """
    if not weights:
        return
    shape = np.shape(weights[0][layer])
    size = math.prod(shape)
    buffer = np.empty((min(block, len(weights)), size), dtype=np.float64)
    for start in range(0, len(weights), block):
        part = slice(start, min(start + block, len(weights)))
        rows = buffer[:part.stop - start]
        arrays = [np.asarray(lists[layer]) for lists in weights[part]]
        for i, array in enumerate(arrays, start):
            if array.shape != shape:
                raise ValueError(f"weights[{i}][{layer}] has shape {array.shape}, the first "
                                 f"{shape}")
        # one call for the block (3× faster than a row at a time); float32 widens exactly
        np.concatenate([array.reshape(1, size) for array in arrays], out=rows)
        yield part, rows


def matrix_blocks(matrix: npt.NDArray[np.float32], rows: npt.NDArray[np.intp],
                  block: int = ROW_BLOCK) -> Iterator[tuple[slice, npt.NDArray[np.float64]]]:
    """``matrix[rows]`` as float64, ``block`` (default :data:`ROW_BLOCK`) rows at a time:
    ``(which of rows, their float64 copy)``, in one buffer reused for every block (as
    :func:`layer_blocks`)."""
    buffer = np.empty((min(block, len(rows)), matrix.shape[1]), dtype=np.float64)
    for start in range(0, len(rows), block):
        part = slice(start, min(start + block, len(rows)))
        values = buffer[:part.stop - start]
        values[...] = matrix[rows[part]]  # float32 widens exactly
        yield part, values


def weighted_sum(weights: Sequence[Sequence[npt.NDArray[Any]]],
                 fractions: npt.NDArray[np.float64]) -> list[npt.NDArray[np.float64]]:
    """Σᵢ ``fractions[i]`` × ``weights[i]`` over ≥ 1 weight lists, array by array, accumulated
    in float64 (one matrix–vector product per layer and block, or per block of whole lists
    when they are rows of one matrix), each array in the first list's shape."""
    stacked = rows_of_one_matrix(weights)
    if stacked is not None:
        matrix, which, shapes = stacked

        def group_sum(group: slice) -> npt.NDArray[np.float64]:
            total = np.zeros(matrix.shape[1], dtype=np.float64)
            shares = fractions[group]
            for part, values in matrix_blocks(matrix, which[group]):
                total += np.einsum("i,ij->j", shares[part], values)
            return total

        sums = _by_groups(group_sum, len(which))
        flat = sums[0]
        for total in sums[1:]:
            flat += total
        return split_row(flat, shapes)
    out: list[npt.NDArray[np.float64]] = []
    for layer, first in enumerate(weights[0]):
        total = np.zeros(np.size(first), dtype=np.float64)
        for part, rows in layer_blocks(weights, layer):
            total += np.einsum("i,ij->j", fractions[part], rows)
        out.append(total.reshape(np.shape(first)))
    return out


def squared_distances(weights: Sequence[Sequence[npt.NDArray[Any]]],
                      reference: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.float64]:
    """‖wᵢ − ``reference``‖² over all arrays, for every weight list wᵢ of ``weights``, in
    float64. Lists holding another number of arrays than ``reference`` raise ``ValueError``."""
    stacked = rows_of_one_matrix(weights)
    if stacked is not None and tuple(np.shape(a) for a in reference) == stacked[2]:
        matrix, which, _ = stacked
        centre = np.concatenate([np.ravel(a) for a in reference]).astype(np.float64)
        squares = np.empty(len(weights), dtype=np.float64)

        def group_squares(group: slice) -> None:
            into = squares[group]
            for part, values in matrix_blocks(matrix, which[group]):
                values -= centre
                into[part] = np.einsum("ij,ij->i", values, values)

        _by_groups(group_squares, len(which))
        return squares
    for i, arrays in enumerate(weights):
        if len(arrays) != len(reference):
            raise ValueError(f"weights[{i}] holds {len(arrays)} arrays, the reference "
                             f"{len(reference)}")
    squares = np.zeros(len(weights), dtype=np.float64)
    for layer, array in enumerate(reference):
        flat = np.ravel(array).astype(np.float64)
        for part, rows in layer_blocks(weights, layer):
            rows -= flat
            squares[part] += np.einsum("ij,ij->i", rows, rows)
    return squares
