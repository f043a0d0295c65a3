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

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional

from fediot.core.model.autoencoder import (
    Autoencoder,
    build_autoencoder,
    check_weights,
    get_weights,
    set_weights,
)
from fediot.core.model.local_training import (
    ADAM_BETAS,
    ADAM_EPS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_SCORE_BATCH_SIZE,
    OPTIMIZERS,
    OptimizerName,
    PrivateTraining,
    TrainReport,
    TrainSettings,
    positive_int,
    private_steps_per_epoch,
    run_epochs,
)
from fediot.core.model.transform import ModelInputError, check_features

__all__ = [  # the shared names are re-exported: callers import them from here too
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SCORE_BATCH_SIZE",
    "OPTIMIZERS",
    "OptimizerName",
    "PrivateTraining",
    "TorchLocalModel",
    "TrainReport",
    "clipped_gradient_sum",
    "private_steps_per_epoch",
    "reconstruction_errors",
    "torch_device",
    "train_local",
]


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


def tanh_(values: torch.Tensor) -> torch.Tensor:
    """``values.tanh_()``; on the CPU by NumPy's vectorised tanh.

    PyTorch's CPU tanh runs one element at a time on this machine (1.0 ns per element on two
    threads, against 0.13 for its sigmoid): it was ~45 % of a scoring pass and ~10 % of a
    training step. NumPy's runs in vector lanes, gives an element the same bits wherever it
    sits in an array, and is within 2 ulp of PyTorch's (tested). Every torch path here —
    training, scoring, stacked training — uses this one, so they agree bit for bit.
    """
    if (values.device.type == "cpu" and values.dtype == torch.float32
            and values.is_contiguous() and not values.requires_grad):
        array = values.numpy()
        np.tanh(array, out=array)
        return values
    return values.tanh_()


def _forward(layers: Sequence[tuple[torch.Tensor, torch.Tensor, bool]],
             batch: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's input and, last, the output: ``[batch, a1, …, output]`` (``layers``:
    ``(weight, bias, tanh_follows)``; each product as ``nn.Linear`` computes it)."""
    activations = [batch]
    out = batch
    for weight, bias, tanh_follows in layers:
        out = torch.addmm(bias, out, weight.t())
        if tanh_follows:
            tanh_(out)
        activations.append(out)
    return activations


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
    # inputs[i] is the input of layer i; the last one the output
    inputs = _forward([(weight, bias, tanh_follows) for (weight, bias, _, _), tanh_follows
                       in zip(layers, tanh_after, strict=True)], batch)
    residual = inputs[-1].sub_(batch)
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


def _make_optimizer(params: list[torch.nn.Parameter], settings: TrainSettings
                    ) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.learning_rate, betas=ADAM_BETAS,
                                eps=ADAM_EPS, weight_decay=settings.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=settings.learning_rate,
                           weight_decay=settings.weight_decay, fused=True)


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
    settings = TrainSettings.checked(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
        weight_decay=weight_decay, prox_mu=prox_mu, seed=seed, shuffle=shuffle)

    params = list(model.parameters())
    anchors: list[torch.Tensor] = []
    if settings.prox_mu > 0:
        if global_weights is None:
            anchors = [param.detach().clone() for param in params]
        else:
            anchors = [torch.from_numpy(a.copy()).to(device)
                       for a in check_weights(model, global_weights)]
    elif global_weights is not None:
        check_weights(model, global_weights)
    opt = _make_optimizer(params, settings)
    generator = torch.Generator().manual_seed(settings.seed)
    rows = _as_tensor(data, device)

    model.train()
    if private is None:
        gradient_step = _gradient_step(model)

        def batches() -> Iterable[torch.Tensor]:
            epoch_rows = (rows[torch.randperm(n_rows, generator=generator).to(device)]
                          if settings.shuffle else rows)
            return torch.split(epoch_rows, settings.batch_size)
    else:
        rate = min(1.0, settings.batch_size / n_rows)
        gradient_step = _private_step(model, private, divisor=rate * n_rows)
        steps_per_epoch = private_steps_per_epoch(n_rows, settings.batch_size)
        noise = private.noise

        def batches() -> Iterable[torch.Tensor]:
            return (_poisson_batch(rows, rate, noise) for _ in range(steps_per_epoch))

    def step(batch: torch.Tensor) -> float:
        loss = gradient_step(batch)
        if anchors:
            _add_prox_gradient(params, anchors, settings.prox_mu)
        opt.step()
        return loss

    return run_epochs(n_rows, settings.epochs, batches, step, epoch_end)


def reconstruction_errors(
    model: Autoencoder, X: npt.ArrayLike, batch_size: int = DEFAULT_SCORE_BATCH_SIZE
) -> npt.NDArray[np.float64]:
    """Per-row reconstruction error ``mean_j (x̂_j − x_j)²`` of transformed rows, as float64.

    Runs under ``torch.inference_mode`` in chunks of ``batch_size`` rows; the arithmetic is
    float32 (relative error ~1e-7), widened to float64 for summing into statistics.
    """
    device = _check_model(model)
    data = check_features(X, model.n_features, dtype=np.float32)
    batch_size = positive_int(batch_size, "batch_size")
    errors = np.empty(len(data), dtype=np.float64)
    rows = _as_tensor(data, device)
    plan = _linear_tanh_plan(model)
    if plan is not None:  # our Linear/Tanh stack: its layers directly, with tanh_
        layers = [(linear.weight.detach(), linear.bias.detach(), tanh_follows)
                  for linear, tanh_follows in plan]
        with torch.inference_mode():
            for start in range(0, len(data), batch_size):
                batch = rows[start : start + batch_size]
                squared = _forward(layers, batch)[-1].sub_(batch).square_()
                errors[start : start + len(batch)] = squared.mean(dim=1).cpu().numpy()
        return errors
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


class TorchLocalModel:
    """A device's model on the PyTorch path (:class:`~fediot.core.model.backend.LocalModel`).

    Parameters
    ----------
    n_features
        Input width.
    use_gpu
        Train and score on a CUDA GPU when one is present (default False; without one, a
        warning and the CPU).
    who
        Names the device in that warning (default: none).
    """

    backend: Final[str] = "torch"

    def __init__(self, n_features: int, *, use_gpu: bool = False, who: str = "") -> None:
        torch.set_num_threads(1)  # one client, one core: results independent of workers
        self.device = torch_device(use_gpu, who)
        self.model = build_autoencoder(n_features, seed=0).to(self.device)

    def set_weights(self, weights: Sequence[npt.ArrayLike]) -> None:
        """Copy ``weights`` into the model (validated first)."""
        set_weights(self.model, weights)

    def get_weights(self) -> list[npt.NDArray[np.float32]]:
        """Copies of the weights, in parameter order."""
        return get_weights(self.model)

    def train(self, X: npt.ArrayLike, *, private: PrivateTraining | None = None,
              **settings: Any) -> TrainReport:
        """:func:`train_local` on this model."""
        return train_local(self.model, X, private=private, **settings)

    def reconstruction_errors(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """:func:`reconstruction_errors` of ``X`` under this model."""
        return reconstruction_errors(self.model, X)
