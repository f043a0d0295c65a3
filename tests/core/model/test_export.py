"""The exported scoring graph (TorchScript, ONNX) scores rows as the detector does.

Tolerance: relative 1e-5. The graph runs the transform in float64 and the network in float32,
as ``score_samples``; TorchScript gives the very same numbers, onnxruntime's kernels differ by
float32 rounding (measured ≤ 4e-7 relative on random and real rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.core.model import AutoencoderDetector, ModelInputError
from fediot.core.model.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_onnx,
    export_scorer,
    export_torchscript,
    scoring_graph,
)

RTOL = 1e-5

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.load` is deprecated:DeprecationWarning")


def heavy_tailed(rows: int, seed: int) -> np.ndarray:
    """N-BaIoT-like values: magnitudes from 0 to ~1e17, some negative, some exactly 0."""
    rng = np.random.default_rng(seed)
    values = np.expm1(rng.uniform(0, 40, (rows, N_FEATURES))) * rng.choice([-1, 1], (rows, 1))
    values[:, :N_FEATURES // 2] = np.abs(values[:, :N_FEATURES // 2])
    values[rng.random((rows, N_FEATURES)) < 0.05] = 0.0
    rows_32: np.ndarray = values.astype(np.float32)
    return rows_32


@pytest.fixture(scope="module")
def detector() -> AutoencoderDetector:
    train = np.abs(heavy_tailed(400, 0)) ** 0.3
    train[:, 7] = 3.0  # a constant column: its std sits on the floor
    return AutoencoderDetector(epochs=3, seed=0).fit(train)


def exported(detector: AutoencoderDetector, tmp_path: Path) -> tuple[
        torch.jit.ScriptModule, ort.InferenceSession]:
    scripted = torch.jit.load(  # type: ignore[no-untyped-call]
        str(export_torchscript(detector, tmp_path / "scorer.pt")))
    session = ort.InferenceSession(str(export_onnx(detector, tmp_path / "scorer.onnx")),
                                   providers=["CPUExecutionProvider"])
    return scripted, session


def scores_of(scripted: torch.jit.ScriptModule, session: ort.InferenceSession,
              rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    by_torch = scripted(torch.from_numpy(rows)).numpy()
    by_onnx = session.run([OUTPUT_NAME], {INPUT_NAME: rows})[0]
    return by_torch, by_onnx


@pytest.mark.parametrize("rows", [1, 1000])
def test_exports_score_random_rows_like_the_detector(detector: AutoencoderDetector,
                                                     tmp_path: Path, rows: int) -> None:
    scripted, session = exported(detector, tmp_path)
    data = heavy_tailed(rows, 1)
    expected = detector.score_samples(data)
    by_torch, by_onnx = scores_of(scripted, session, data)
    for scores in (by_torch, by_onnx):
        assert scores.shape == (rows,) and scores.dtype == np.float32
        np.testing.assert_allclose(scores, expected, rtol=RTOL)


def test_exports_score_real_rows_like_the_detector(nbaiot_dir: Path, tmp_path: Path) -> None:
    benign = pd.read_csv(nbaiot_dir / "Device_unspecified" / "benign_traffic.csv")
    mirai = pd.read_csv(nbaiot_dir / "Ecobee_Thermostat" / "mirai_attacks" / "udp.csv")
    gafgyt = pd.read_csv(nbaiot_dir / "Doorbell_unspecified" / "gafgyt_attacks" / "udp.csv")
    assert tuple(benign.columns) == FEATURE_NAMES
    real = AutoencoderDetector(epochs=10, batch_size=32, seed=0).fit(benign.iloc[:200])
    scripted, session = exported(real, tmp_path)
    for frame in (benign, mirai, gafgyt):
        rows = frame.to_numpy(dtype=np.float32)
        expected = real.score_samples(rows)
        for scores in scores_of(scripted, session, rows):
            np.testing.assert_allclose(scores, expected, rtol=RTOL)
    # the float32 input the graph takes costs nothing visible against float64 rows either
    by_onnx = session.run([OUTPUT_NAME], {INPUT_NAME: mirai.to_numpy(dtype=np.float32)})[0]
    np.testing.assert_allclose(by_onnx, real.score_samples(mirai), rtol=RTOL)


def test_onnx_graph_has_a_dynamic_row_dimension(detector: AutoencoderDetector,
                                                tmp_path: Path) -> None:
    model = onnx.load(str(export_onnx(detector, tmp_path / "scorer.onnx")))
    onnx.checker.check_model(model)
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == INPUT_NAME
    assert dims[0].dim_param == "rows" and dims[1].dim_value == N_FEATURES
    assert model.graph.output[0].name == OUTPUT_NAME


def test_graph_module_matches_and_leaves_the_detector_alone(detector: AutoencoderDetector
                                                            ) -> None:
    graph = scoring_graph(detector)
    rows = heavy_tailed(50, 2)
    with torch.inference_mode():
        scores = graph(torch.from_numpy(rows)).numpy()
    np.testing.assert_array_equal(scores, detector.score_samples(rows).astype(np.float32))
    assert graph.autoencoder is not detector.model_
    assert not any(p.requires_grad for p in graph.parameters())


def test_export_refuses_bad_requests(detector: AutoencoderDetector, tmp_path: Path) -> None:
    with pytest.raises(ModelInputError, match="unknown export format 'tflite'"):
        export_scorer(detector, tmp_path / "x", "tflite")
    with pytest.raises(ModelInputError, match="not fitted"):
        export_scorer(AutoencoderDetector(), tmp_path / "x.onnx", "onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written
