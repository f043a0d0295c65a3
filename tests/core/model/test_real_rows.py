"""Real N-BaIoT rows are the judge: a detector fitted on the real Danmini doorbell's benign rows
(warm-up rows dropped) must flag real Mirai and Gafgyt floods and stay quiet on later benign
rows, however long it trains.

Rows: the Danmini doorbell's first 3,050 benign rows in time order (train / opt / held-out
thirds), the first 299 rows of a real Mirai UDP (Ecobee thermostat) and a Gafgyt UDP (a doorbell)
file, and the complete real Ennio doorbell Gafgyt TCP and UDP floods (≈100k rows each). The
floods come from other devices than the benign rows: a flood's rows carry no trace of the device
(every packet has a new spoofed source).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fediot.core.data.reader import read_feature_csv
from fediot.core.model import AutoencoderDetector


@pytest.fixture(scope="module")
def real(nbaiot_dir: Path, nbaiot_more_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    nbaiot, more = nbaiot_dir, nbaiot_more_dir
    torch.set_num_threads(1)  # the estimator's speed on a loaded 2-core machine
    rows = {
        "benign": np.asarray(read_feature_csv(more / "Danmini_Doorbell/benign_traffic.csv")),
        "mirai.udp": np.asarray(read_feature_csv(
            nbaiot / "Ecobee_Thermostat/mirai_attacks/udp.csv")),
        "gafgyt.udp (299)": np.asarray(read_feature_csv(
            nbaiot / "Doorbell_unspecified/gafgyt_attacks/udp.csv")),
    }
    unzipped = tmp_path_factory.mktemp("floods")
    for attack in ("tcp", "udp"):
        with zipfile.ZipFile(more / f"zips/Ennio_Doorbell.gafgyt.{attack}.zip") as archive:
            (member,) = archive.namelist()
            path = Path(archive.extract(member, unzipped))
        rows[f"gafgyt.{attack} (Ennio)"] = np.asarray(read_feature_csv(path))
    return rows


def _thirds(benign: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = len(benign) // 3, 2 * len(benign) // 3
    return benign[:a], benign[a:b], benign[b:]


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [20, 500])
def test_floods_are_flagged_however_long_the_model_trains(real: dict[str, np.ndarray],
                                                          epochs: int) -> None:
    train, opt, held_out = _thirds(real["benign"])
    detector = AutoencoderDetector(epochs=epochs, early_stopping=False, seed=0).fit(train, opt)
    assert detector.warmup_dropped_ == (3, 0)  # the cold start and two new sources
    assert detector.train_report_ is not None and detector.train_report_.epochs == epochs
    flagged = {name: float((detector.score_samples(rows) > detector.threshold_).mean())
               for name, rows in real.items() if name != "benign"}
    assert len(real["gafgyt.tcp (Ennio)"]) == 101_536
    assert len(real["gafgyt.udp (Ennio)"]) == 103_933
    assert all(share >= 0.99 for share in flagged.values()), flagged
    fpr = float((detector.score_samples(held_out) > detector.threshold_).mean())
    assert fpr <= 0.10


@pytest.mark.slow
def test_without_warm_up_hygiene_a_long_trained_model_misses_the_floods(
        real: dict[str, np.ndarray]) -> None:
    """The control: the same 500 epochs with the cold-start row kept learn to reconstruct the
    spoofed-source floods (the failure the warm-up rule exists for)."""
    train, opt, _ = _thirds(real["benign"])
    detector = AutoencoderDetector(epochs=500, early_stopping=False, seed=0,
                                   warmup=None).fit(train, opt)
    udp = real["gafgyt.udp (Ennio)"]
    assert float((detector.score_samples(udp) > detector.threshold_).mean()) < 0.5
