"""Peak memory of one device process, PyTorch path against NumPy path (issue 12, item 5).

Each measurement is a fresh process that does what a warm device worker does for a run: import
the device's code (Flower's ClientApp from ``fediot.engines.flower.apps``), then answer the
run's messages through that ClientApp, as Flower hands them over: the scaler step (loading the
device's data), ``--rounds`` training rounds, the threshold step and the evaluation. The server
side (pooled scaler, global model, threshold mean + k·std) is played in the same process by
the same core functions, for this one device. With ``--backend numpy`` torch is made
unimportable in the process first, so the run proves it needs none.

    .venv/bin/python bench/bench_device_memory.py [--rounds 5] [--device-venv PATH]

writes ``bench/results/device_memory.json``: per backend the resident memory after the imports,
after loading the data, and the process's peak, with the time of each phase; with
``--device-venv`` also that venv's size on disk (``scripts/setup.sh --device`` makes one).
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from common import REPO, write_result

DEFAULT_CONFIG = REPO / "config_simulation" / "fedml_config.yaml"
MB = 1024 * 1024


class _NoTorch(importlib.abc.MetaPathFinder):
    """Makes ``import torch`` fail as it does where torch is not installed."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> None:
        if fullname == "torch" or fullname.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


def block_torch() -> None:
    """From now on this process cannot import torch."""
    sys.meta_path.insert(0, _NoTorch())


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def device_run(config_path: Path, weights_path: Path, backend: str, rounds: int,
               device_index: int) -> dict[str, Any]:
    """One device's tasks of a run through the ClientApp, in this process (the child)."""
    started = time.perf_counter()
    import numpy as np
    from flwr.app import Context, Metadata, RecordDict
    from flwr.app.message.message import make_message  # how Flower builds a received message

    from fediot.core.config import dump_config, load_config
    from fediot.core.federated.devices import client_ids
    from fediot.core.federated.messages import EvaluateTask, FitTask, ModelState, ScoreTask
    from fediot.core.federated.meter import process_peak_rss_bytes
    from fediot.core.model.threshold import threshold_mean_std
    from fediot.engines.flower.apps import client_app
    from fediot.engines.flower.records import MESSAGE_TYPES, decode_reply, encode_task

    phases: dict[str, dict[str, float]] = {}
    mark = started

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = {"seconds": round(now - mark, 3), "rss_mb": round(_rss_bytes() / MB, 1),
                        "peak_mb": round(process_peak_rss_bytes() / MB, 1)}
        mark = now

    phase("imports")
    config = load_config(config_path)
    device = client_ids(config)[device_index]
    context = Context(run_id=1, node_id=1, node_config={"device": device, "backend": backend},
                      state=RecordDict(), run_config={"config-json": dump_config(config)})

    def ask(method: str, task: Any) -> Any:
        # the message as the SuperNode delivers it (the SuperLink has stamped its metadata)
        metadata = Metadata(run_id=1, message_id=f"{method}-{time.monotonic_ns()}",
                            src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="",
                            created_at=time.time(), ttl=3600.0,
                            message_type=MESSAGE_TYPES[method])
        reply = client_app(make_message(metadata, encode_task(method, task)), context)
        if reply.has_error():
            raise SystemExit(f"{method}: {reply.error.reason}")
        return decode_reply(method, reply.content)

    scaler = ask("scaler_stats", None)
    phase("data and scaler step")
    with np.load(weights_path) as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    train = config.train_args
    losses = []
    for server_round in range(1, rounds + 1):
        fit = ask("fit", FitTask(ModelState(weights, scaler.stats), server_round,
                                 train.learning_rate, train.epochs, train.batch_size,
                                 train.client_optimizer, seed=config.common_args.random_seed))
        weights = fit.weights
        losses.append(fit.mean_loss)
    phase(f"{rounds} training rounds")
    model = ModelState(weights, scaler.stats)
    errors = ask("threshold_stats", ScoreTask(model))
    threshold = threshold_mean_std(errors, config.detection_args.threshold_k)
    phase("threshold step")
    evaluation = ask("evaluate", EvaluateTask(model, threshold, 0,
                                              config.detection_args.max_window))
    phase("evaluation step")
    confusion = evaluation.counts_window.confusion()
    return {
        "backend": backend,
        "device": device,
        "torch_imported": "torch" in sys.modules,
        "train_rows": scaler.data.train,
        "threshold_rows": scaler.data.opt,
        "test_rows": evaluation.benign_errors.n + evaluation.attack_errors.n,
        "losses": losses,
        "threshold": threshold,
        "window": evaluation.window,
        "flagged_attack_rows": confusion.tp,
        "flagged_benign_rows": confusion.fp,
        "final_weights_sum": float(sum(float(np.abs(w).sum()) for w in weights)),
        "phases": phases,
        "peak_rss_mb": round(process_peak_rss_bytes() / MB, 1),
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_child(backend: str, weights_path: Path, *, rounds: int, config: Path = DEFAULT_CONFIG,
              device_index: int = 0, timeout: float = 900.0,
              block: bool = True) -> dict[str, Any]:
    """:func:`device_run` in a fresh Python process (for ``numpy``, torch is made unimportable
    there first unless ``block`` is False)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), str(REPO / "bench"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", backend,
               "--weights", str(weights_path), "--rounds", str(rounds), "--config", str(config),
               "--device-index", str(device_index)]
    if not block:
        command.append("--allow-torch")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"device run ({backend}) failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def initial_weights(path: Path, seed: int) -> None:
    """The run's initial global model (the server builds it with torch), as ``arr_0 …``."""
    import numpy as np

    from fediot.core.model import build_autoencoder, get_weights

    weights = get_weights(build_autoencoder(seed=seed))
    np.savez(path, *weights)


def _venv_megabytes(venv: Path) -> float:
    total = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    return round(total / MB, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--device-index", type=int, default=0)
    parser.add_argument("--device-venv", type=Path, help="a device-only venv to size")
    parser.add_argument("--child", choices=("torch", "numpy"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--allow-torch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "numpy" and not args.allow_torch:
            block_torch()
        print(json.dumps(device_run(args.config, args.weights, args.child, args.rounds,
                                    args.device_index)))
        return
    from fediot.core.config import load_config

    seed = load_config(args.config).common_args.random_seed
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "initial.npz"
        initial_weights(weights, seed)
        for backend in ("torch", "numpy"):
            runs[backend] = run_child(backend, weights, rounds=args.rounds, config=args.config,
                                      device_index=args.device_index)
            print(f"{backend}: peak {runs[backend]['peak_rss_mb']} MB, "
                  f"{runs[backend]['seconds']} s; phases {runs[backend]['phases']}")
    payload: dict[str, Any] = {
        "command": " ".join(["bench/bench_device_memory.py", *sys.argv[1:]]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds, "config": str(args.config.resolve().relative_to(REPO)),
        "runs": runs,
    }
    if args.device_venv:
        payload["device_venv_mb"] = _venv_megabytes(args.device_venv)
        print(f"device venv {args.device_venv}: {payload['device_venv_mb']} MB")
    print(write_result("device_memory", payload))


if __name__ == "__main__":
    main()
