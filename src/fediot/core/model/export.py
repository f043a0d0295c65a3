"""The fitted detector as one self-contained scoring graph for edge runtimes (TorchScript, ONNX).

The graph maps raw N-BaIoT rows (float32, rows × 115 in ``FEATURE_NAMES`` order) to per-row
reconstruction errors, exactly what :meth:`AutoencoderDetector.score_samples` computes::

    v = sign(x)·log1p(|x|)            float64, as FeatureScaler.transform
    z = float32((v − mean_) / scale_) the scaler's floored standard deviations are baked in
    score = mean_j (autoencoder(z)_j − z_j)²    float32, as reconstruction_errors

The transform runs in float64 on purpose: a column whose standard deviation hit the floor
(0.01) multiplies the float32 rounding of ``log1p`` (up to 4e-6 near 41) by 100, which would
move scores of constant columns visibly; in float64 the graph agrees with ``score_samples`` to
float32 rounding. The batch dimension is dynamic. The threshold and the window vote stay out of
the graph (they are per device and per stream); ship them beside it.

ONNX goes through PyTorch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``):
the torch.export-based one needs ``onnxscript``, which is not a dependency. Both that exporter
and ``torch.jit`` are deprecated in recent PyTorch but work in 2.13; their deprecation warnings
are silenced here, not elsewhere.
"""

# No ``from __future__ import annotations``: TorchScript reads the class-level buffer
# annotations of ScoringGraph and cannot resolve them as strings.
import copy
import warnings
from pathlib import Path
from typing import Final

import torch
from torch import nn

from fediot.core.formats import EXPORT_FORMATS
from fediot.core.io import atomic_path
from fediot.core.model.autoencoder import Autoencoder
from fediot.core.model.detector import AutoencoderDetector
from fediot.core.model.transform import ModelInputError

INPUT_NAME: Final[str] = "features"
"""Name of the graph's input: float32[rows, n_features] raw feature values."""
OUTPUT_NAME: Final[str] = "scores"
"""Name of the graph's output: float32[rows] reconstruction errors."""
ONNX_OPSET: Final[int] = 17


class ScoringGraph(nn.Module):
    """Scaler transform, autoencoder and per-row mean squared error in one module.

    Parameters
    ----------
    autoencoder
        The trained autoencoder (copied, frozen and put in eval mode).
    mean
        float64[n_features] scaler means in signed-log1p space (``FeatureScaler.mean_``).
    scale
        float64[n_features] floored standard deviations (``FeatureScaler.scale_``).
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, autoencoder: Autoencoder, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.n_features = autoencoder.n_features
        self.autoencoder = copy.deepcopy(autoencoder).eval().requires_grad_(False)
        self.register_buffer("mean", mean.detach().to(torch.float64).clone())
        self.register_buffer("scale", scale.detach().to(torch.float64).clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        values = features.to(torch.float64)
        values = torch.sign(values) * torch.log1p(torch.abs(values))
        standardised = ((values - self.mean) / self.scale).to(torch.float32)
        reconstruction: torch.Tensor = self.autoencoder(standardised)
        scores: torch.Tensor = (reconstruction - standardised).square().mean(dim=1)
        return scores


def scoring_graph(detector: AutoencoderDetector) -> ScoringGraph:
    """The fitted ``detector``'s scoring graph (a torch module, in eval mode)."""
    if not isinstance(detector, AutoencoderDetector):
        raise ModelInputError(f"expected an AutoencoderDetector; got {type(detector).__name__}")
    if not hasattr(detector, "threshold_"):
        raise ModelInputError("the detector is not fitted; nothing to export")
    scaler = detector.scaler_
    return ScoringGraph(detector.model_, torch.from_numpy(scaler.mean_.copy()),
                        torch.from_numpy(scaler.scale_.copy())).eval()


def _example(graph: ScoringGraph) -> torch.Tensor:
    return torch.ones((2, graph.n_features), dtype=torch.float32)


def export_torchscript(detector: AutoencoderDetector, path: Path) -> Path:
    """Write the scoring graph as TorchScript (``torch.jit.load(path)(features) -> scores``)."""
    graph = scoring_graph(detector)
    path = Path(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        scripted = torch.jit.script(graph)
        with atomic_path(path) as tmp:
            torch.jit.save(scripted, str(tmp))
    return path


def export_onnx(detector: AutoencoderDetector, path: Path, *, opset: int = ONNX_OPSET) -> Path:
    """Write the scoring graph as ONNX (input ``features``, output ``scores``, dynamic rows)."""
    graph = scoring_graph(detector)
    path = Path(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        with atomic_path(path) as tmp:
            torch.onnx.export(
                graph, (_example(graph),), str(tmp), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "rows"}, OUTPUT_NAME: {0: "rows"}},
            )
    return path


def export_scorer(detector: AutoencoderDetector, path: Path, file_format: str) -> Path:
    """:func:`export_torchscript` or :func:`export_onnx`, by ``file_format``."""
    if file_format == "torchscript":
        return export_torchscript(detector, path)
    if file_format == "onnx":
        return export_onnx(detector, path)
    raise ModelInputError(
        f"unknown export format {file_format!r}; use one of {', '.join(EXPORT_FORMATS)}")
