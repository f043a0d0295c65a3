"""Real N-BaIoT rows as the judge: a per-device detector on the real Danmini doorbell's benign
rows, at several training lengths, with and without warm-up hygiene.

Rows (``../shared/data``): the Danmini doorbell's first 3,050 benign rows in time order, cut
into thirds (train / opt / held-out test, as N-BaIoT does); the first 299 rows of a real Mirai
UDP flood (Ecobee thermostat) and of a Gafgyt UDP flood (a doorbell); the complete real Ennio
doorbell Gafgyt TCP and UDP floods. The detector is :class:`AutoencoderDetector` with its
defaults (threshold mean + 1·std of the opt third, N-BaIoT's k), trained a fixed number of
epochs; ws* is the smallest window with no false alarm on the opt third.

Run: ``.venv/bin/python bench/bench_real_rows.py`` → ``bench/results/real_rows.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rich.console import Console
from rich.table import Table

from common import SHARED, write_result
from fediot.core.catalog import FEATURE_NAMES
from fediot.core.data.reader import read_feature_csv
from fediot.core.features.extractor import extract_features
from fediot.core.features.pcap import read_capture
from fediot.core.features.warmup import WarmupRule
from fediot.core.metrics.window import smallest_quiet_window, window_vote
from fediot.core.model import AutoencoderDetector

Rows = npt.NDArray[np.float32]


def load_rows(folder: Path) -> dict[str, Rows]:
    """The real rows by name (the floods unzipped to a temporary folder)."""
    nbaiot, more = SHARED / "data/nbaiot", SHARED / "data/nbaiot_more"
    rows = {
        "benign": np.asarray(read_feature_csv(more / "Danmini_Doorbell/benign_traffic.csv")),
        "mirai.udp (Ecobee, 299)": np.asarray(read_feature_csv(
            nbaiot / "Ecobee_Thermostat/mirai_attacks/udp.csv")),
        "gafgyt.udp (doorbell, 299)": np.asarray(read_feature_csv(
            nbaiot / "Doorbell_unspecified/gafgyt_attacks/udp.csv")),
    }
    for attack in ("tcp", "udp"):
        with zipfile.ZipFile(more / f"zips/Ennio_Doorbell.gafgyt.{attack}.zip") as archive:
            (member,) = archive.namelist()
            path = Path(archive.extract(member, folder))
        rows[f"gafgyt.{attack} (Ennio, all)"] = np.asarray(read_feature_csv(path))
    return rows


def max_abs_pcc(rows: npt.NDArray[np.floating]) -> float:
    columns = [i for i, name in enumerate(FEATURE_NAMES) if name.endswith("_pcc")]
    return float(np.abs(rows[:, columns]).max())


def measure(rows: dict[str, Rows], epochs: int, warmup: bool) -> dict[str, Any]:
    benign = rows["benign"]
    a, b = len(benign) // 3, 2 * len(benign) // 3
    started = time.perf_counter()
    detector = AutoencoderDetector(epochs=epochs, early_stopping=False,
                                   warmup=WarmupRule() if warmup else None)
    detector.fit(benign[:a], benign[a:b])

    def flags(block: Rows) -> npt.NDArray[np.bool_]:
        return np.asarray(detector.score_samples(block) > detector.threshold_)

    window = smallest_quiet_window(flags(benign[a:b]), 1000)
    test = flags(benign[b:])
    return {
        "epochs": epochs, "warmup": warmup, "threshold": detector.threshold_,
        "window": window, "fpr": float(test.mean()),
        "fpr_window": float(window_vote(test, window).mean()),
        "tpr": {name: float(flags(block).mean()) for name, block in rows.items()
                if name != "benign"},
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", default="20,100,500")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        rows = load_rows(Path(folder))
    capture = extract_features(read_capture(SHARED / "data/pcap/kitsune_mirai_first2000.pcap")
                               .packets)
    cells = [measure(rows, int(e), warmup) for warmup in (True, False)
             for e in args.epochs.split(",")]
    pcc = {name: max_abs_pcc(block) for name, block in rows.items()}
    pcc["real capture (Kitsune camera, our extractor)"] = max_abs_pcc(capture)
    write_result("real_rows", {"cells": cells, "max_abs_pcc": pcc,
                               "rows": {name: len(block) for name, block in rows.items()}})
    table = Table(title="Real rows: Danmini benign thirds, real floods (percent)")
    attacks = list(cells[0]["tpr"])
    for name in ("warm-up", "epochs", "ws*", "FPR", "FPR·w", *attacks):
        table.add_column(name, justify="right")
    for cell in cells:
        table.add_row("dropped" if cell["warmup"] else "kept", str(cell["epochs"]),
                      str(cell["window"]), f"{100 * cell['fpr']:.2f}",
                      f"{100 * cell['fpr_window']:.2f}",
                      *(f"{100 * cell['tpr'][name]:.2f}" for name in attacks))
    console = Console(width=200)
    console.print(table)
    console.print({name: round(value, 3) for name, value in pcc.items()})


if __name__ == "__main__":
    main()
