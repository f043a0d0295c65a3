"""What ``fediot simulate`` prints about devices and their replies: each line once."""

from __future__ import annotations

import logging
from pathlib import Path

from typer.testing import CliRunner

from federated_data import write_uci_dataset
from fediot.faces.cli.main import app


def test_a_refusal_and_its_rejection_are_each_printed_once(tmp_path: Path) -> None:
    """Every device refuses the scaler step (too few rows for statistics): its own line
    ("refused …", through the device's logs) and the server's ("rejected the reply …", a
    warning printed above the progress bar) each appear once per device, not twice, and the
    handler that printed the warnings is gone after the command."""
    data = write_uci_dataset(tmp_path / "nbaiot", n_devices=3, rows=300)
    before = list(logging.getLogger("fediot").handlers)
    result = CliRunner().invoke(app, [
        "simulate", "--set", "data_args.dataset=N-BaIoT",
        "--set", f"data_args.data_cache_dir={data}", "--set", "train_args.comm_round=1",
        "--set", "train_args.client_num_in_total=3", "--set",
        "train_args.client_num_per_round=3",
        "--set", "device_args.min_rows_for_statistics=100000",
        "--runs-dir", str(tmp_path / "runs")])
    output = " ".join(result.output.split())  # Rich wraps long lines
    assert result.exit_code != 0, output
    assert "scaler step: 0 of 3 devices gave a usable reply" in output
    assert output.count("refused the scaler_stats task") == 3, output
    assert output.count("rejected the reply of") == 3, output
    assert logging.getLogger("fediot").handlers == before
