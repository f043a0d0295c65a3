"""Many devices' local training at once: their models stacked as ``[K, out, in]`` tensors.

:func:`train_local` trains one small model with ~55 tensor operations per step, each costing
more in overhead than in arithmetic at 128 rows. Here the K devices of a round train together:
every layer is one ``baddbmm`` over all of them, the backward pass the same explicit matrix
products as :func:`~fediot.core.model.training._forward_backward` batched over devices, and the
optimiser PyTorch's fused Adam (or SGD) kernel, elementwise, over the stacked tensors.

Devices with fewer steps stop early: they are sorted by steps (most first), so at every step the
devices still training form a prefix ``[:a]`` of the stack and each operation runs on that
prefix. A device's last batch of an epoch may be smaller than the others': its padded rows
point at an all-zero row and their residual is masked to zero, so they add nothing to any
gradient, and each device's loss is scaled by its own row count.

Shuffles:

- ``exact`` (default): every device draws its permutation per epoch from its own seeded
  generator exactly as :func:`train_local` does, and on the CPU the places where a stacked
  kernel rounds differently from a lone device's are redone as for a lone device (fused
  Adam's partial last unit, bias sums over padded rows, products of a few rows), so each
  device's result equals its sequential training (bit for bit: tested per device for batches
  of 1 to 20 rows and several batches, with batch sizes that are multiples of 16 (with other
  sizes a lone device's one-row last batch starts unaligned in memory and can differ by
  ~1e-8); and within 1e-6 on the aggregated weights against the sequential engine). On a GPU
  the kernels differ from the CPU's anyway: the same shuffles, no corrections;
- ``fast``: one batched draw per chunk and epoch (random keys sorted within each device's rows):
  a different, equally uniform permutation per device, without K generator calls.

Devices are trained in chunks of at most ``chunk_devices`` (sized from
:data:`CHUNK_MEMORY_BYTES` by default), which bounds the memory of parameters, optimiser state
and activations whatever the number of devices. Everything stays on the rows' torch device
(CPU or CUDA) until the trained weights are copied back once per chunk.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import torch

from fediot.core.catalog import N_FEATURES
from fediot.core.config import CHOICES
from fediot.core.model.autoencoder import build_autoencoder, weight_shapes
from fediot.core.model.local_training import TrainSettings
from fediot.core.model.row_weights import RowWeights, layout
from fediot.core.model.training import _linear_tanh_plan, tanh_
from fediot.core.model.transform import ModelInputError

ShuffleMode = Literal["exact", "fast"]
SHUFFLE_MODES: Final[tuple[str, ...]] = CHOICES["device_args.vectorised_shuffle"]

CHUNK_MEMORY_BYTES: Final[int] = 32 * 2**20
"""Memory a chunk of stacked devices may take (parameters, gradients, Adam's two moments and
the step's activations); :func:`chunk_size` derives the devices per chunk from it."""

SMALL_BATCH_ROWS: Final[int] = 4
"""Exact mode recomputes a device's products alone when its batch has fewer rows than this:
BLAS multiplies one to three rows along another path (with other rounding) than a stack of
padded ones. Measured here on the autoencoder's eight layer shapes, forward and backward
products, 3,840 each: every product of 1–3 rows differed, none of 4–16 rows (and the
testbed's 900 and 9,000 virtual devices trained bit for bit as with 16, in 0.7× the time at
9,000, where half the devices have fewer than 16 rows); ``test_stacked_products_of_few_rows``
keeps checking it
(``tests/core/model/test_stacked.py``)."""

STACK_ROWS_MULTIPLE: Final[int] = 16
"""A step stacks a multiple of this many rows per device (or a full batch): batched products
over other row counts round differently from a lone device's (measured on the testbed's 900
virtual devices: 2e-8 apart with the exact count, bit for bit with multiples of 16)."""

ADAM_BETAS: Final[tuple[float, float]] = (0.9, 0.999)
ADAM_EPS: Final[float] = 1e-8
"""``torch.optim.Adam``'s defaults, which :func:`train_local` uses."""


def tanh_layout(n_features: int = N_FEATURES) -> list[bool]:
    """For each Linear layer of the autoencoder, whether a Tanh follows it."""
    plan = _linear_tanh_plan(build_autoencoder(n_features, seed=0))
    if plan is None:  # our own model always is the Linear/Tanh stack
        raise ModelInputError("the autoencoder is not a Linear/Tanh stack")
    return [tanh_follows for _, tanh_follows in plan]


def chunk_size(batch_rows: int, n_features: int = N_FEATURES,
               memory_bytes: int = CHUNK_MEMORY_BYTES) -> int:
    """Devices per chunk so that one chunk's tensors stay within ``memory_bytes``: four
    float32 copies of the parameters (weights, gradients, two Adam moments) and about three
    of the step's activations (inputs, deltas, temporaries) of ``batch_rows`` rows per device.
    """
    shapes = weight_shapes(build_autoencoder(n_features, seed=0))
    params = sum(math.prod(s) for s in shapes)
    widths = n_features + sum(s[0] for s in shapes[::2])
    per_device = 4 * (4 * params + 3 * batch_rows * widths)
    return max(1, memory_bytes // per_device)


@dataclass(frozen=True)
class StackedSettings:
    """The training task every device of a call runs (a :class:`FitTask`'s numbers).

    Parameters
    ----------
    epochs, batch_size, learning_rate
        As :func:`train_local`'s.
    optimizer
        ``"adam"`` or ``"sgd"`` (plain, no momentum), as :func:`train_local`'s.
    weight_decay
        L2 penalty handed to the optimiser (default 0).
    prox_mu
        FedProx coefficient μ (default 0): adds μ·(w − w_global) to every gradient.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        # the same checks (and messages) as a single device's train_local
        TrainSettings.checked(epochs=self.epochs, batch_size=self.batch_size,
                              learning_rate=self.learning_rate, optimizer=self.optimizer,
                              weight_decay=self.weight_decay, prox_mu=self.prox_mu, seed=0,
                              shuffle=True)


@dataclass(frozen=True)
class StackedResult:
    """What :func:`train_stacked` did, one entry per device in the order given.

    Parameters
    ----------
    weights
        Per device, its trained weights (float32 arrays in :func:`get_weights` order): a
        :class:`~fediot.core.model.row_weights.RowWeights`, its row of ``trained``.
    trained
        The array holding every device's trained weights, a row each.
    mean_loss
        Per device, the row-weighted mean batch loss of its last epoch (as
        :class:`TrainReport`'s ``mean_loss``).
    steps
        Per device, the optimiser steps it took.
    chunk_of
        Per device, the index of the chunk it trained in; ``chunk_seconds`` the wall time of
        each chunk and ``chunk_device_steps`` its devices' steps summed (for a fair share of
        time per device).
    """

    weights: list[list[npt.NDArray[np.float32]]]
    mean_loss: npt.NDArray[np.float64]
    trained: npt.NDArray[np.float32]
    steps: npt.NDArray[np.int64]
    chunk_of: npt.NDArray[np.int64]
    chunk_seconds: list[float]
    chunk_device_steps: list[int]


def _epoch_orders(counts: npt.NDArray[np.int64], starts: npt.NDArray[np.int64], epochs: int,
                  mode: ShuffleMode, seeds: Sequence[int] | None,
                  fast_seed: int) -> list[npt.NDArray[np.int64]]:
    """Per epoch, every device's rows in its shuffled order, as row indices of the stacked
    rows, concatenated in device order."""
    total = int(counts.sum())
    if mode == "exact":
        assert seeds is not None
        perms: list[list[torch.Tensor]] = [[] for _ in range(epochs)]
        for count, start, seed in zip(counts.tolist(), starts.tolist(), seeds, strict=True):
            generator = torch.Generator().manual_seed(int(seed))  # as train_local draws them
            for epoch in range(epochs):
                perms[epoch].append(torch.randperm(count, generator=generator) + start)
        return [torch.cat(p).numpy() if p else np.zeros(0, np.int64) for p in perms]
    rng = np.random.default_rng(fast_seed)
    segment = np.repeat(np.arange(len(counts), dtype=np.float64), counts)
    local_start = np.repeat(np.cumsum(counts) - counts, counts)
    orders = []
    for _ in range(epochs):
        # device index + uniform key: one sort shuffles every device within its own rows
        order = np.argsort(segment + rng.random(total), kind="stable")
        orders.append(order - local_start + np.repeat(starts, counts))
    return orders


@dataclass(frozen=True)
class _Plan:
    """One chunk's schedule: ``index[s, i, b]`` the stacked row of device i's row b at step s
    (``pad`` when none), how many devices are active at each step and how many rows each
    step stacks per device (``widths``: the most any active device has there, so a step of
    last batches is not padded to a full batch), which steps have padded rows and
    ``(device, rows)`` of the devices with a smaller batch there (``small``: every active
    device with fewer than :data:`SMALL_BATCH_ROWS`), each device's loss scale per step, and
    which steps belong to its last epoch."""

    index: torch.Tensor
    active: list[int]
    widths: list[int]
    padded: list[bool]
    partial: list[list[tuple[int, int]]]
    small: list[list[tuple[int, int]]]
    scale: torch.Tensor
    last_epoch: torch.Tensor


def _plan(counts: npt.NDArray[np.int64], orders: list[npt.NDArray[np.int64]], batch: int,
          pad: int, device: torch.device) -> _Plan:
    """The chunk's schedule from its devices' row counts (sorted by steps, most first) and
    their per-epoch orders (:func:`_epoch_orders`)."""
    k = len(counts)
    epochs = len(orders)
    width = int(min(batch, counts.max()))  # rows per device per step at most
    per_epoch = -(-counts // batch)
    total_steps = per_epoch * epochs
    steps = int(total_steps.max())
    index = np.full((steps, k, width), pad, dtype=np.int64)
    device_of = np.repeat(np.arange(k), counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    for epoch, order in enumerate(orders):
        step = epoch * per_epoch[device_of] + within // batch
        index[step, device_of, within % batch] = order
    rows = (index != pad).sum(axis=2)  # [steps, k]
    active = (total_steps[None, :] > np.arange(steps)[:, None]).sum(axis=1).tolist()
    # the devices are sorted by size, so a step's active ones have similar batches: stacking
    # only as many rows as the largest of them (rounded up to STACK_ROWS_MULTIPLE) spares
    # the padding of a full batch
    widths = [min(width, -(-int(rows[s, :a].max()) // STACK_ROWS_MULTIPLE)
                  * STACK_ROWS_MULTIPLE) for s, a in enumerate(active)]
    padded = [bool((rows[s, :a] < w).any()) for s, (a, w) in enumerate(zip(active, widths,
                                                                           strict=True))]
    # a bias gradient summed over a stack of fewer rows than the chunk's full batch rounds
    # differently from a lone device's sum (measured): each such batch sums its own rows
    partial = [[(i, int(rows[s, i])) for i in np.flatnonzero(rows[s, :a] < width).tolist()]
               for s, a in enumerate(active)]
    with np.errstate(divide="ignore"):
        scale = np.where(rows > 0, 2.0 / (np.maximum(rows, 1) * N_FEATURES), 0.0)
    first_of_last = (epochs - 1) * per_epoch
    step_ids = np.arange(steps)[:, None]
    last = (step_ids >= first_of_last[None, :]) & (step_ids < total_steps[None, :])
    small = [[(i, int(rows[s, i]))
              for i in np.flatnonzero(rows[s, :a] < SMALL_BATCH_ROWS).tolist()]
             for s, a in enumerate(active)]
    return _Plan(torch.from_numpy(index).to(device), active, widths, padded, partial, small,
                 torch.from_numpy(scale.astype(np.float32)).to(device),
                 torch.from_numpy(last.astype(np.float32)).to(device))


_ADAM_UNIT: Final[int] = 16
"""float32 elements per cache line: PyTorch's fused CPU Adam splits a tensor into units of
this many elements and computes a partial last unit differently (scalar loop)."""


class _AdamTails:
    """Fused Adam over the stack with the rounding a lone device gets, element for element.

    PyTorch's CPU kernel cuts a tensor into units of 16 float32 elements; full units run in
    vector lanes, a partial last unit through a scalar loop whose rounding differs. A device
    trained alone has such a partial unit (its "tail") in every parameter whose size is not a
    multiple of 16. In one stacked call, the devices' tails fall inside full units, while the
    block's own partial last unit holds elements a lone device computes in lanes. So each step
    saves both kinds of elements, lets the stacked call run, puts them back, steps the
    misplaced lane elements in a scratch of full units, and steps each device's tail as a
    tensor of its own (views into the buffers), which the kernel runs through its scalar loop:
    the same numbers as :func:`train_local` (tested bit for bit).

    Parameters
    ----------
    buffers
        The flat parameter, gradient and two moment buffers.
    offsets, sizes
        Where each parameter's stacked block ``[k, size]`` starts in them, and its
        per-device element count.
    k
        Devices stacked.
    """

    def __init__(self, buffers: list[torch.Tensor], offsets: list[int], sizes: list[int],
                 k: int) -> None:
        self.buffers = buffers
        self.blocks = list(zip(offsets, sizes, strict=True))
        tails = [(offset, size, size % _ADAM_UNIT) for offset, size in self.blocks
                 if size % _ADAM_UNIT]
        self.per_device = len(tails)
        starts = [[offset + i * size + size - r for offset, size, r in tails] for i in range(k)]
        self.tail_index = np.array([[p for start, (_, _, r) in zip(row, tails, strict=True)
                                     for p in range(start, start + r)] for row in starts],
                                   dtype=np.int64).reshape(k, -1)
        self.views = [[b[start:start + r] for row in starts
                       for start, (_, _, r) in zip(row, tails, strict=True)] for b in buffers]
        self.scratch = [torch.zeros(len(offsets) * _ADAM_UNIT, dtype=torch.float32,
                                    device=buffers[0].device) for _ in buffers]
        self._indices: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def _for(self, a: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """For a prefix of ``a`` devices: every saved element, the misplaced lane elements
        (the blocks' partial last units less the last device's tails) and how many."""
        if a not in self._indices:
            lanes = [np.arange(offset + a * size - (a * size) % _ADAM_UNIT,
                               offset + a * size - size % _ADAM_UNIT)
                     for offset, size in self.blocks]
            lane = np.concatenate(lanes).astype(np.int64)
            saved = np.concatenate([self.tail_index[:a].reshape(-1), lane])
            device = self.buffers[0].device
            self._indices[a] = (torch.from_numpy(saved).to(device),
                                torch.from_numpy(lane).to(device), len(lane))
        return self._indices[a]

    def save(self, a: int) -> list[torch.Tensor]:
        """The elements the stacked step of ``a`` devices gets wrong, before it runs."""
        saved, _, _ = self._for(a)
        return [self.buffers[i].index_select(0, saved) for i in (0, 2, 3)]

    def redo(self, a: int, before: list[torch.Tensor], step: torch.Tensor,
             settings: StackedSettings) -> None:
        """Put them back, then step them as a lone device's kernel would."""
        saved, lane, count = self._for(a)
        for i, value in zip((0, 2, 3), before, strict=True):
            self.buffers[i].index_copy_(0, saved, value)
        if count:  # full units of a scratch: lane arithmetic, as for a lone device
            for buffer, scratch in zip(self.buffers, self.scratch, strict=True):
                torch.index_select(buffer, 0, lane, out=scratch[:count])
            param, grad, exp_avg, exp_avg_sq = self.scratch
            _adam_step([param], [grad], [exp_avg], [exp_avg_sq], step, settings)
            for i in (0, 2, 3):
                self.buffers[i].index_copy_(0, lane, self.scratch[i][:count])
        tails = a * self.per_device
        param_tails, grad_tails, exp_avg_tails, exp_avg_sq_tails = (
            v[:tails] for v in self.views)
        _adam_step(param_tails, grad_tails, exp_avg_tails, exp_avg_sq_tails, step, settings)


def _adam_step(params: list[torch.Tensor], grads: list[torch.Tensor],
               exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
               step: torch.Tensor, settings: StackedSettings) -> None:
    """PyTorch's fused Adam kernel (as ``torch.optim.Adam(fused=True)`` runs it) on tensors
    whose step count is ``step`` (already advanced)."""
    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], [step] * len(params),
                       lr=settings.learning_rate, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1],
                       weight_decay=settings.weight_decay, eps=ADAM_EPS, amsgrad=False,
                       maximize=False)


class _Workspace:
    """The stacked parameters, gradients and Adam moments of up to ``capacity`` devices, made
    once per :func:`train_stacked` call and reused by every chunk: fresh buffers per chunk
    cost more (the kernel faults their pages in and zeroes them) than small chunks save.

    One flat buffer per kind holds every parameter's ``[capacity, *shape]`` block, parameter
    by parameter, so each device prefix ``[:a]`` of a block is contiguous.

    Parameters
    ----------
    shapes
        The model's weight shapes, in :func:`get_weights` order.
    capacity
        Devices a chunk holds at most.
    adam, exact
        Whether the optimiser is Adam (two moment buffers), and whether its tails are
        corrected (:class:`_AdamTails`; exact mode on the CPU).
    device
        Torch device of the buffers.
    """

    def __init__(self, shapes: Sequence[tuple[int, ...]], capacity: int, adam: bool,
                 exact: bool, device: torch.device) -> None:
        sizes = [math.prod(shape) for shape in shapes]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1] * capacity]).astype(int).tolist()
        total = sum(sizes) * capacity
        # gradients are written before they are read at every step: no zeroing needed
        self.flat = torch.empty(total, dtype=torch.float32, device=device)
        self.grad_flat = torch.empty(total, dtype=torch.float32, device=device)
        self.moment_flats = [torch.zeros(total, dtype=torch.float32, device=device)
                             for _ in range(2 if adam else 0)]

        def blocks(flat: torch.Tensor) -> list[torch.Tensor]:
            return [flat[o:o + n * capacity].view(capacity, *shape)
                    for o, n, shape in zip(offsets, sizes, shapes, strict=True)]

        self.params = blocks(self.flat)
        self.grads = blocks(self.grad_flat)
        self.moments = [blocks(m) for m in self.moment_flats]
        self.tails = _AdamTails([self.flat, self.grad_flat, *self.moment_flats], offsets,
                                sizes, capacity) \
            if adam and exact and device.type == "cpu" else None

    def reset(self, global_weights: Sequence[torch.Tensor], k: int) -> None:
        """Start the first ``k`` devices from ``global_weights``, their moments at zero."""
        for param, weight in zip(self.params, global_weights, strict=True):
            param[:k].copy_(weight.unsqueeze(0).expand_as(param[:k]))
        for moments in self.moments:
            for moment in moments:
                moment[:k].zero_()


def _train_chunk(global_weights: Sequence[torch.Tensor], rows: torch.Tensor, plan: _Plan,
                 settings: StackedSettings, tanh_after: list[bool], exact: bool,
                 space: _Workspace) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Train one chunk's stacked models (all starting from ``global_weights``) in ``space``;
    return the stacked weights (views into ``space``: copy them before the next chunk) and
    each device's summed squared residual over its last epoch."""
    k = plan.index.shape[1]
    space.reset(global_weights, k)
    params, grads, moments, tails = space.params, space.grads, space.moments, space.tails
    adam = settings.optimizer == "adam"
    step_count = torch.zeros((), dtype=torch.float32, device=rows.device)
    losses = torch.zeros(k, dtype=torch.float32, device=rows.device)
    mask = plan.index != rows.shape[0] - 1
    n_layers = len(tanh_after)
    for s, (a, width) in enumerate(zip(plan.active, plan.widths, strict=True)):
        index = plan.index[s, :a, :width]
        batch = rows.index_select(0, index.reshape(-1)).view(a, width, -1)
        inputs = [batch]
        out = batch
        small = plan.small[s] if exact else []
        for layer in range(n_layers):
            weight, bias = params[2 * layer][:a], params[2 * layer + 1][:a]
            layer_in = out
            out = torch.baddbmm(bias.unsqueeze(1), layer_in, weight.transpose(1, 2))
            for i, count in small:
                # a product of a few rows takes another path: as alone, on fresh copies
                # (aligned as a lone device's tensors: such a product's sums depend on
                # where its operands start in memory; measured, 1–3 rows)
                out[i, :count] = torch.addmm(bias[i].clone(), layer_in[i, :count].clone(),
                                             weight[i].clone().t())
            if tanh_after[layer]:
                tanh_(out)
            inputs.append(out)
        residual = out.sub_(batch)
        if plan.padded[s]:
            residual.mul_(mask[s, :a, :width].unsqueeze(-1))
        squared = residual.view(a, -1)
        losses[:a].addcmul_(torch.linalg.vecdot(squared, squared), plan.last_epoch[s, :a])
        delta = residual.mul_(plan.scale[s, :a].view(a, 1, 1))
        for layer in range(n_layers - 1, -1, -1):
            torch.bmm(delta.transpose(1, 2), inputs[layer], out=grads[2 * layer][:a])
            torch.sum(delta, dim=1, out=grads[2 * layer + 1][:a])
            if exact and plan.partial[s]:
                # a sum over padded rows groups the real ones differently: sum a smaller
                # batch's own rows, as train_local does
                for i, count in plan.partial[s]:
                    torch.sum(delta[i, :count], dim=0, out=grads[2 * layer + 1][i])
            if layer:
                delta_in = delta
                delta = torch.bmm(delta_in, params[2 * layer][:a])
                for i, count in small:  # as alone, on fresh copies (as above)
                    delta[i, :count] = delta_in[i, :count].clone().mm(
                        params[2 * layer][i].clone())
                if tanh_after[layer - 1]:  # through tanh: d/dz tanh(z) = 1 − tanh(z)²
                    activation = inputs[layer]
                    delta = torch.addcmul(delta, delta, activation * activation, value=-1)
        live = [p[:a] for p in params]
        live_grads = [g[:a] for g in grads]
        if settings.prox_mu > 0:  # ∇ (μ/2)‖w − w_g‖² = μ (w − w_g), as train_local adds it
            for grad, param, anchor in zip(live_grads, live, global_weights, strict=True):
                grad.add_(param - anchor, alpha=settings.prox_mu)
        if adam:
            saved = tails.save(a) if tails is not None else None
            step_count.add_(1)
            _adam_step(live, live_grads, [m[:a] for m in moments[0]],
                       [v[:a] for v in moments[1]], step_count, settings)
            if tails is not None and saved is not None:
                tails.redo(a, saved, step_count, settings)
        else:
            torch._fused_sgd_(live, live_grads, [], weight_decay=settings.weight_decay,
                              momentum=0.0, lr=settings.learning_rate, dampening=0.0,
                              nesterov=False, maximize=False, is_first_step=False)
    return [p[:k] for p in params], losses


def train_stacked(global_weights: Sequence[npt.NDArray[np.float32]], rows: torch.Tensor,
                  bounds: Sequence[tuple[int, int]], settings: StackedSettings, *,
                  mode: ShuffleMode = "exact", seeds: Sequence[int] | None = None,
                  fast_seed: int = 0, chunk_devices: int | None = None,
                  threads: int = 1,
                  out: npt.NDArray[np.float32] | None = None) -> StackedResult:
    """Train one copy of ``global_weights`` per device on its own rows, all devices at once.

    Parameters
    ----------
    global_weights
        The starting model (float32 arrays in :func:`get_weights` order), shared by all.
    rows
        Every device's transformed rows stacked (float32, ``[N + 1, n_features]``, on the torch
        device to train on), whose **last row is all zeros** (the padding row).
    bounds
        Per device, ``(start, stop)``: its rows ``rows[start:stop]`` (at least one).
    settings
        The training task (:class:`StackedSettings`).
    mode
        ``"exact"`` (default): each device shuffles with its ``seeds`` entry as
        :func:`train_local` would; ``"fast"``: one batched shuffle per chunk and epoch, seeded
        from ``fast_seed`` and the chunk.
    seeds
        Per device, its shuffling seed (required in exact mode).
    chunk_devices
        Devices trained together at most (default :func:`chunk_size` of the batch).
    threads
        Chunks trained at once, each by a thread of its own with its own workspace (default 1;
        on a CUDA device always 1). The results do not depend on it.
    out
        An array to write the trained weights into (default: a new one), used when its shape
        is ``[devices, parameters]`` and float32; the result's weights are views into it.

    Devices are trained in order of their steps (most first) and returned in the given order.
    """
    if mode not in SHUFFLE_MODES:
        raise ModelInputError(f"shuffle mode must be one of {SHUFFLE_MODES}; got {mode!r}")
    if mode == "exact" and (seeds is None or len(seeds) != len(bounds)):
        raise ModelInputError("exact shuffles need one seed per device")
    if rows.dim() != 2 or rows.dtype != torch.float32 or len(rows) < 1 \
            or bool(rows[-1].any()):
        raise ModelInputError("rows must be float32 [N + 1, features] ending with a zero row")
    starts = np.array([b[0] for b in bounds], dtype=np.int64)
    counts = np.array([b[1] - b[0] for b in bounds], dtype=np.int64)
    if len(counts) and (counts.min() < 1 or starts.min() < 0
                        or (starts + counts).max() > len(rows) - 1):
        raise ModelInputError("every device needs at least one row within the stacked rows")
    tanh_after = tanh_layout(rows.shape[1])
    device = rows.device
    anchors = [torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(device)
               for w in global_weights]
    steps = settings.epochs * (-(-counts // settings.batch_size))
    order = np.lexsort((-counts, -steps))  # most steps first; within a step count, most rows
    per_chunk = chunk_devices or chunk_size(min(settings.batch_size, int(counts.max(initial=1))),
                                            rows.shape[1])
    shapes = [tuple(w.shape) for w in anchors]
    offsets = layout(shapes)
    # every device's trained weights in one array, a row each in training order (a reused
    # one if the caller hands it in: fresh pages cost more to fault in than to fill)
    shape = (len(order), offsets[-1])
    trained = out if out is not None and out.shape == shape and out.dtype == np.float32 \
        else np.empty(shape, dtype=np.float32)
    mean_loss = np.zeros(len(bounds))
    chunk_of = np.zeros(len(bounds), dtype=np.int64)
    firsts = list(range(0, len(order), per_chunk))
    chunk_seconds = [0.0] * len(firsts)
    spaces: queue.SimpleQueue[_Workspace] = queue.SimpleQueue()
    workers = max(1, min(threads, len(firsts))) if device.type == "cpu" else 1
    for _ in range(workers):
        spaces.put(_Workspace(shapes, min(per_chunk, len(order)),
                              settings.optimizer == "adam", mode == "exact", device))

    def train_chunk(number: int) -> None:
        started = time.perf_counter()
        first = firsts[number]
        members = order[first:first + per_chunk]
        orders = _epoch_orders(counts[members], starts[members], settings.epochs, mode,
                               None if seeds is None else [seeds[i] for i in members],
                               fast_seed * 1_000_003 + number)
        plan = _plan(counts[members], orders, settings.batch_size, len(rows) - 1, device)
        space = spaces.get()
        try:
            stacked, losses = _train_chunk(anchors, rows, plan, settings, tanh_after,
                                           mode == "exact", space)
            # the one copy back to the host, before another chunk reuses the workspace
            block = torch.from_numpy(trained[first:first + len(members)])
            for param, start, stop in zip(stacked, offsets, offsets[1:], strict=False):
                block[:, start:stop].copy_(param.reshape(len(members), -1))
            sums = losses.cpu().numpy().astype(np.float64)
        finally:
            spaces.put(space)
        mean_loss[members] = sums / (counts[members] * rows.shape[1])
        chunk_of[members] = number
        chunk_seconds[number] = time.perf_counter() - started

    if workers > 1:
        # chunks are independent: each thread trains whole chunks in a workspace of its own
        # (torch releases the GIL inside its kernels, so two threads use two cores)
        with ThreadPoolExecutor(workers, thread_name_prefix="fediot-stacked") as pool:
            list(pool.map(train_chunk, range(len(firsts))))
    else:
        for number in range(len(firsts)):
            train_chunk(number)
    row_of = np.empty(len(order), dtype=np.int64)
    row_of[order] = np.arange(len(order))
    layer_shapes = tuple(shapes)
    weights: list[list[npt.NDArray[np.float32]]] = list(
        RowWeights.every_row(trained, layer_shapes, row_of.tolist()))
    chunk_steps = [int(steps[order[first:first + per_chunk]].sum()) for first in firsts]
    return StackedResult(weights, mean_loss, trained, steps.astype(np.int64), chunk_of,
                         chunk_seconds, chunk_steps)
