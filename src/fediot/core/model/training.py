"""Local training and scoring of the autoencoder on already-transformed float32 rows.

Speed on one core comes from cutting per-operation overhead, which dominates a model this small:
mini-batches are slices of one permuted float32 tensor per epoch (no per-row Dataset/DataLoader,
whose indexing and collation cost more than the model), the backward pass of our Linear/Tanh
stack is written out as matrix products (same gradients as autograd, a third of the operations;
any other module stack falls back to autograd), the optimizers are PyTorch's fused CPU kernels,
and the FedProx term is added straight to the gradients. The result is deterministic for a seed
at a fixed ``torch.get_num_threads()`` (the thread count can change summation order in matmuls).

The optimizer state is created afresh on every call, as a federated client does each round.

DP-SGD (:class:`PrivateTraining`) reuses the same explicit backward pass: a Linear layer's
per-row gradient is the outer product δᵢaᵢᵀ, so per-row norms and the clipped sum come from the
δ and a matrices the batch gradient already needs (no per-row gradient tensors, no Opacus).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional

from fediot.core.model.autoencoder import Autoencoder, check_weights
from fediot.core.model.transform import ModelInputError, check_features

DEFAULT_BATCH_SIZE: Final[int] = 128
"""Our mini-batch size. On one core a step at 128 rows costs under twice a step at 10 rows
(per-operation overhead dominates), so 128 trains ~8× more rows per second than the seed's 10,
while an epoch still has about 70–1,400 Adam steps on the N-BaIoT devices (two thirds of
13k–175k benign rows for training). See ``bench/bench_train.py``."""

DEFAULT_SCORE_BATCH_SIZE: Final[int] = 2048
"""Rows per forward pass in :func:`reconstruction_errors`. Activations of ~1 MB stay in cache:
on one core 1k–2k-row chunks score ~1.3× faster than 65,536-row chunks (bench_train.py)."""

OptimizerName = Literal["adam", "sgd"]
OPTIMIZERS: Final[tuple[str, ...]] = ("adam", "sgd")


@dataclass(frozen=True)
class TrainReport:
    """What one call of :func:`train_local` did.

    Parameters
    ----------
    num_examples
        Rows of ``X`` (the FedAvg weight of this client).
    epochs
        Passes over ``X``.
    steps
        Optimizer steps taken.
    mean_loss
        Row-weighted mean of the batch reconstruction losses (per-element MSE) over the last
        epoch; the FedProx term is not included.
    epoch_losses
        The same mean for every epoch, in order.
    seconds
        Wall time of the training loop (excluding input validation).
    samples_per_second
        ``num_examples · epochs / seconds``.
    """

    num_examples: int
    epochs: int
    steps: int
    mean_loss: float
    epoch_losses: tuple[float, ...]
    seconds: float
    samples_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (``epoch_losses`` becomes a list)."""
        data = asdict(self)
        data["epoch_losses"] = list(self.epoch_losses)
        return data


@dataclass(frozen=True)
class PrivateTraining:
    """DP-SGD settings for :func:`train_local` (record-level differential privacy).

    Parameters
    ----------
    clip_norm
        C: every row's gradient is clipped to this L2 norm.
    noise_multiplier
        σ: each step adds N(0, σ²C²) to every coordinate of the summed clipped gradients.
    noise
        Draws the noise and the rows of each step; seed it from the operating system's
        entropy (``numpy.random.default_rng()``), never from a seed anyone else knows.
    """

    clip_norm: float
    noise_multiplier: float
    noise: np.random.Generator

    def __post_init__(self) -> None:
        _non_negative(self.clip_norm, "clip_norm", strict=True)
        _non_negative(self.noise_multiplier, "noise_multiplier")


def private_steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Steps DP-SGD takes per epoch: each samples every row with probability
    ``batch_size / n_rows``, so an epoch of ``n_rows / batch_size`` steps (at least one) sees
    each row once on average."""
    return max(1, round(n_rows / batch_size))


def torch_device(use_gpu: bool, who: str = "") -> torch.device:
    """Where to train and score: a CUDA GPU when ``use_gpu`` and one is present; otherwise
    the CPU (with a :class:`RuntimeWarning` naming ``who`` when a GPU was asked for)."""
    if not use_gpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    warnings.warn(f"{who + ': ' if who else ''}using_gpu is set but no CUDA GPU is present; "
                  "training on the CPU", RuntimeWarning, stacklevel=3)
    return torch.device("cpu")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ModelInputError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _non_negative(value: Any, name: str, *, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ModelInputError(f"{name} must be a number; got {value!r}")
    number = float(value)
    if not np.isfinite(number) or number < 0 or (strict and number == 0):
        kind = "positive" if strict else "non-negative"
        raise ModelInputError(f"{name} must be a finite {kind} number; got {value!r}")
    return number


def _check_model(model: Autoencoder) -> torch.device:
    """The one device all of ``model``'s float32 parameters live on (CPU or a GPU)."""
    if not isinstance(model, Autoencoder):
        raise ModelInputError(f"expected an Autoencoder; got {type(model).__name__}")
    devices = set()
    for name, param in model.named_parameters():
        if param.dtype != torch.float32:
            raise ModelInputError(f"parameter {name} is {param.dtype}; expected float32")
        devices.add(param.device)
    if len(devices) != 1:
        spread = sorted(map(str, devices))
        raise ModelInputError(f"model parameters are spread over devices {spread}")
    return devices.pop()


def _as_tensor(data: npt.NDArray[np.float32], device: torch.device) -> torch.Tensor:
    # torch.from_numpy shares memory but warns on read-only arrays (e.g. memory-mapped files).
    return torch.from_numpy(data if data.flags.writeable else data.copy()).to(device)


def _add_prox_gradient(
    params: list[torch.nn.Parameter], anchors: list[torch.Tensor], prox_mu: float
) -> None:
    # ∇ (μ/2)·‖w − w_g‖² = μ·(w − w_g), added to the gradients without growing the autograd graph.
    grads, current, targets = [], [], []
    for param, anchor in zip(params, anchors, strict=True):
        if param.grad is not None:
            grads.append(param.grad)
            current.append(param.detach())
            targets.append(anchor)
    torch._foreach_add_(grads, torch._foreach_sub(current, targets), alpha=prox_mu)


GradientStep = Callable[[torch.Tensor], float]
"""Computes the batch's MSE, leaves its gradient in every ``param.grad`` and returns the loss."""


def _linear_tanh_plan(model: Autoencoder) -> list[tuple[nn.Linear, bool]] | None:
    """``[(linear, tanh_follows), …]`` if the model is exactly our Linear/Tanh stack, else None."""
    if type(model).forward is not Autoencoder.forward:
        return None
    plan: list[tuple[nn.Linear, bool]] = []
    for module in (*model.encoder, *model.decoder):
        if isinstance(module, nn.Linear) and module.bias is not None:
            plan.append((module, False))
        elif isinstance(module, nn.Tanh) and plan and not plan[-1][1]:
            plan[-1] = (plan[-1][0], True)
        else:
            return None
    if not plan or plan[-1][1]:  # the explicit backward assumes a linear output layer
        return None
    return plan


_Layer = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(weight, bias, weight gradient, bias gradient) of one Linear layer."""


def _linear_layers(plan: list[tuple[nn.Linear, bool]]) -> list[_Layer]:
    """Each layer's parameters, with zeroed gradient tensors attached to them."""
    layers = []
    for linear, _ in plan:
        weight_grad = torch.zeros_like(linear.weight)
        bias_grad = torch.zeros_like(linear.bias)
        linear.weight.grad, linear.bias.grad = weight_grad, bias_grad
        layers.append((linear.weight.detach(), linear.bias.detach(), weight_grad, bias_grad))
    return layers


def _forward_backward(layers: list[_Layer], tanh_after: list[bool], batch: torch.Tensor,
                      per_row: bool) -> tuple[float, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The batch's MSE and, for every layer from the last down, ``(δ, a)``: the gradient at
    its output and its input, so that its weight gradient is δᵀa and its bias gradient Σδ.

    ``per_row``: δ of each row's own loss (its MSE over the features) instead of the batch's
    (δ then sums to the batch gradient × batch size): what per-row clipping needs.
    """
    inputs = [batch]  # inputs[i] is the input of layer i
    out = batch
    for (weight, bias, _, _), tanh_follows in zip(layers, tanh_after, strict=True):
        out = torch.addmm(bias, out, weight.t())
        if tanh_follows:
            out.tanh_()
        inputs.append(out)
    residual = out.sub_(batch)
    flat = residual.view(-1)
    loss = float(torch.dot(flat, flat)) / flat.numel() if flat.numel() else 0.0
    scale = 2.0 / (batch.shape[1] if per_row else max(flat.numel(), 1))
    delta = residual.mul_(scale)  # ∂loss/∂output
    pairs = []
    for index in range(len(layers) - 1, -1, -1):
        pairs.append((delta, inputs[index]))
        if index:
            delta = delta.mm(layers[index][0])
            if tanh_after[index - 1]:  # through tanh: d/dz tanh(z) = 1 − tanh(z)²
                activation = inputs[index]
                delta = torch.addcmul(delta, delta, activation * activation, value=-1)
    return loss, pairs


def _explicit_backprop_step(plan: list[tuple[nn.Linear, bool]]) -> GradientStep:
    """Forward and backward of the Linear/Tanh stack written out as matrix products.

    Same gradients as autograd (up to float32 summation order; tested), but about 55 tensor
    operations per step instead of autograd's ~150 plus graph bookkeeping, which on one core is
    most of the cost of a small batch. Gradients are written in place into ``param.grad``.
    """
    layers = _linear_layers(plan)
    tanh_after = [tanh_follows for _, tanh_follows in plan]

    def step(batch: torch.Tensor) -> float:
        with torch.no_grad():
            loss, pairs = _forward_backward(layers, tanh_after, batch, per_row=False)
            for (_, _, weight_grad, bias_grad), (delta, activation) in zip(
                    reversed(layers), pairs, strict=True):
                torch.mm(delta.t(), activation, out=weight_grad)
                torch.sum(delta, dim=0, out=bias_grad)
        return loss

    return step


def _private_backprop_step(plan: list[tuple[nn.Linear, bool]], private: PrivateTraining,
                           divisor: float) -> GradientStep:
    """DP-SGD's gradient: every row's gradient clipped to L2 norm C, summed, plus
    N(0, σ²C²) per coordinate, divided by ``divisor`` (the expected batch size).

    A row's gradient of a Linear layer is the outer product δᵢaᵢᵀ (plus δᵢ for the bias), so
    its squared norm is Σ_layers ‖δᵢ‖²(‖aᵢ‖² + 1) and the clipped sum is (δ∘c)ᵀA with
    cᵢ = min(1, C/‖gᵢ‖): no per-row gradient tensor is ever built.
    """
    layers = _linear_layers(plan)
    tanh_after = [tanh_follows for _, tanh_follows in plan]
    sizes = [t.numel() for layer in reversed(layers) for t in layer[2:]]  # backward order
    std = private.noise_multiplier * private.clip_norm

    def step(batch: torch.Tensor) -> float:
        with torch.no_grad():
            loss, pairs = _forward_backward(layers, tanh_after, batch, per_row=True)
            squared = torch.zeros(len(batch), dtype=batch.dtype, device=batch.device)
            for delta, activation in pairs:
                squared += (delta * delta).sum(1) * ((activation * activation).sum(1) + 1.0)
            factor = (private.clip_norm / squared.sqrt().clamp_min(1e-12)).clamp_max(1.0)
            noise = torch.from_numpy(private.noise.standard_normal(sum(sizes), np.float32))
            chunks = iter(torch.split(noise.to(batch.device), sizes))
            for (_, _, weight_grad, bias_grad), (delta, activation) in zip(
                    reversed(layers), pairs, strict=True):
                clipped = delta * factor.unsqueeze(1)
                torch.mm(clipped.t(), activation, out=weight_grad)
                torch.sum(clipped, dim=0, out=bias_grad)
                weight_grad.add_(next(chunks).view_as(weight_grad), alpha=std)
                bias_grad.add_(next(chunks), alpha=std)
                weight_grad.div_(divisor)
                bias_grad.div_(divisor)
        return loss

    return step


def _private_step(model: Autoencoder, private: PrivateTraining, divisor: float) -> GradientStep:
    plan = _linear_tanh_plan(model)
    if plan is None:
        raise ModelInputError("differentially private training needs the Linear/Tanh "
                              "autoencoder (per-row gradients are computed for it only)")
    return _private_backprop_step(plan, private, divisor)


def clipped_gradient_sum(model: Autoencoder, X: npt.ArrayLike,
                         private: PrivateTraining) -> list[npt.NDArray[np.float32]]:
    """One DP-SGD gradient of ``model`` on all rows of ``X`` (in ``model.parameters()``
    order): Σᵢ clip(∇ℓᵢ, C) + N(0, σ²C² I), not divided by anything. ``X`` may have no rows
    (the result is then the noise alone). The model is left unchanged."""
    device = _check_model(model)
    data = check_features(X, model.n_features, dtype=np.float32)
    step = _private_step(model, private, divisor=1.0)
    step(_as_tensor(data, device))
    grads = [param.grad.detach().cpu().numpy().copy() for param in model.parameters()
             if param.grad is not None]
    for param in model.parameters():
        param.grad = None
    return grads


def _autograd_step(model: Autoencoder) -> GradientStep:
    params = list(model.parameters())

    def step(batch: torch.Tensor) -> float:
        for param in params:
            param.grad = None
        loss = functional.mse_loss(model(batch), batch)
        torch.autograd.backward(loss)
        return loss.item()

    return step


def _gradient_step(model: Autoencoder) -> GradientStep:
    """Explicit backprop for our Linear/Tanh stack; autograd for anything else."""
    plan = _linear_tanh_plan(model)
    return _autograd_step(model) if plan is None else _explicit_backprop_step(plan)


def _make_optimizer(
    params: list[torch.nn.Parameter], name: str, learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, weight_decay=weight_decay, fused=True)
    raise ModelInputError(f"optimizer must be one of {OPTIMIZERS}; got {name!r}")


def _poisson_batch(rows: torch.Tensor, rate: float, rng: np.random.Generator) -> torch.Tensor:
    """Every row independently with probability ``rate``: a Binomial(n, rate) count of rows
    drawn uniformly without replacement is the same distribution, at O(count) cost."""
    count = int(rng.binomial(len(rows), rate))
    chosen = rng.choice(len(rows), size=count, replace=False)
    return rows[torch.from_numpy(chosen).to(rows.device)]


def train_local(
    model: Autoencoder,
    X: npt.ArrayLike,
    *,
    epochs: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float,
    optimizer: OptimizerName = "adam",
    weight_decay: float = 0.0,
    prox_mu: float = 0.0,
    global_weights: Sequence[npt.ArrayLike] | None = None,
    seed: int = 0,
    shuffle: bool = True,
    epoch_end: Callable[[int], bool] | None = None,
    private: PrivateTraining | None = None,
) -> TrainReport:
    """Train ``model`` in place to reconstruct the rows of ``X`` (MSE).

    Parameters
    ----------
    model
        An :class:`Autoencoder` (float32, CPU) as built by ``build_autoencoder``.
    X
        Transformed rows (``FeatureScaler.transform`` output), float32, finite, ≥ 1 row, width
        ``model.n_features``; other float dtypes are converted with one copy.
    epochs, batch_size, learning_rate
        Passes over ``X``, rows per step (the last batch of an epoch may be smaller), step size.
    optimizer
        ``"adam"`` (default betas) or ``"sgd"`` (plain, no momentum).
    weight_decay
        L2 penalty handed to the optimizer (default 0).
    prox_mu
        FedProx coefficient μ: adds (μ/2)·‖w − w_global‖² to the loss (default 0, i.e. FedAvg).
    global_weights
        ``w_global`` for the FedProx term; ``None`` uses the model's weights at the start of the
        call, which is what a client holds right after receiving the global model.
    seed
        Seeds the shuffling generator; the model's initial weights are the caller's business.
    shuffle
        Draw a fresh row permutation every epoch (default); ``False`` keeps the row order.
    epoch_end
        Called after each epoch with its 1-based number; returning True ends training there
        (early stopping). The report then counts the epochs actually run.
    private
        DP-SGD (default ``None``: plain training). Each epoch is then
        :func:`private_steps_per_epoch` steps, each on a Poisson sample of the rows (every row
        independently with probability q = ``batch_size`` / rows, drawn from
        ``private.noise``; ``seed`` and ``shuffle`` are unused), whose gradient is the sum of
        the rows' gradients clipped to C, plus N(0, σ²C²), divided by the expected batch size
        q · rows. The optimizer, weight decay and the FedProx term act on that gradient only
        (post-processing). ``mean_loss`` is then the mean over the sampled rows.
    """
    device = _check_model(model)
    data = check_features(X, model.n_features, dtype=np.float32)
    n_rows = len(data)
    if n_rows == 0:
        raise ModelInputError("X has no rows to train on")
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    learning_rate = _non_negative(learning_rate, "learning_rate", strict=True)
    weight_decay = _non_negative(weight_decay, "weight_decay")
    prox_mu = _non_negative(prox_mu, "prox_mu")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ModelInputError(f"seed must be an integer; got {seed!r}")

    params = list(model.parameters())
    anchors: list[torch.Tensor] = []
    if prox_mu > 0:
        if global_weights is None:
            anchors = [param.detach().clone() for param in params]
        else:
            anchors = [torch.from_numpy(a.copy()).to(device)
                       for a in check_weights(model, global_weights)]
    elif global_weights is not None:
        check_weights(model, global_weights)
    opt = _make_optimizer(params, optimizer, learning_rate, weight_decay)
    generator = torch.Generator().manual_seed(int(seed))
    rows = _as_tensor(data, device)

    model.train()
    if private is None:
        gradient_step = _gradient_step(model)
        steps_per_epoch = -(-n_rows // batch_size)
    else:
        rate = min(1.0, batch_size / n_rows)
        gradient_step = _private_step(model, private, divisor=rate * n_rows)
        steps_per_epoch = private_steps_per_epoch(n_rows, batch_size)
    epoch_losses: list[float] = []
    steps = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        if private is None:
            epoch_rows = (rows[torch.randperm(n_rows, generator=generator).to(device)]
                          if shuffle else rows)
            batches: Iterable[torch.Tensor] = torch.split(epoch_rows, batch_size)
        else:
            batches = (_poisson_batch(rows, rate, private.noise) for _ in range(steps_per_epoch))
        weighted_loss = 0.0
        seen = 0
        for batch in batches:
            loss = gradient_step(batch)
            if anchors:
                _add_prox_gradient(params, anchors, prox_mu)
            opt.step()
            weighted_loss += loss * len(batch)
            seen += len(batch)
            steps += 1
        epoch_losses.append(weighted_loss / max(seen, 1))
        if epoch_end is not None and epoch_end(epoch):
            break
    seconds = time.perf_counter() - start
    return TrainReport(
        num_examples=n_rows,
        epochs=len(epoch_losses),
        steps=steps,
        mean_loss=epoch_losses[-1],
        epoch_losses=tuple(epoch_losses),
        seconds=seconds,
        samples_per_second=(n_rows * len(epoch_losses) / seconds if seconds > 0
                            else float("inf")),
    )


def reconstruction_errors(
    model: Autoencoder, X: npt.ArrayLike, batch_size: int = DEFAULT_SCORE_BATCH_SIZE
) -> npt.NDArray[np.float64]:
    """Per-row reconstruction error ``mean_j (x̂_j − x_j)²`` of transformed rows, as float64.

    Runs under ``torch.inference_mode`` in chunks of ``batch_size`` rows; the arithmetic is
    float32 (relative error ~1e-7), widened to float64 for summing into statistics.
    """
    device = _check_model(model)
    data = check_features(X, model.n_features, dtype=np.float32)
    batch_size = _positive_int(batch_size, "batch_size")
    errors = np.empty(len(data), dtype=np.float64)
    rows = _as_tensor(data, device)
    # switching modes walks every submodule: costly next to scoring one live packet, so a
    # model already in eval mode (a fitted detector's) is left alone
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(data), batch_size):
                batch = rows[start : start + batch_size]
                squared = model(batch).sub_(batch).square_()
                errors[start : start + len(batch)] = squared.mean(dim=1).cpu().numpy()
    finally:
        if was_training:
            model.train()
    return errors
