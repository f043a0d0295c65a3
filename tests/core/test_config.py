"""The run configuration: every key honoured or rejected with its name."""

from __future__ import annotations

from pathlib import Path

import pytest

from fediot.core.config import Config, ConfigError, dump_config, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["config/fedml_config.yaml",
                                  "config_simulation/fedml_config.yaml"])
def test_shipped_configs_load(path: str) -> None:
    config = load_config(REPO / path)
    assert config.train_args.client_num_in_total == 9
    assert parse_config(__import__("yaml").safe_load(dump_config(config))) == config


def test_the_seeds_own_file_is_accepted() -> None:
    seed = {
        "common_args": {"training_type": "simulation", "random_seed": 0},
        "data_args": {"dataset": "N-BaIoT", "data_cache_dir": "./data/N-BaIoT",
                      "partition_method": "hetero", "partition_alpha": 0.5},
        "model_args": {"model": "autoencoder", "model_file_cache_folder": "./x",
                       "global_model_file_path": "./x/global_model.pt"},
        "train_args": {"federated_optimizer": "FedAvg", "client_id_list": "[]",
                       "client_num_in_total": 9, "client_num_per_round": 9, "comm_round": 10,
                       "epochs": 1, "batch_size": 10, "client_optimizer": "sgd",
                       "learning_rate": 0.03, "weight_decay": 0.001},
        "validation_args": {"frequency_of_the_test": 5},
        "device_args": {"worker_num": 9, "using_gpu": False,
                        "gpu_mapping_file": "config/gpu_mapping.yaml",
                        "gpu_mapping_key": "mapping_default"},
        "comm_args": {"backend": "MPI", "is_mobile": 0},
        "tracking_args": {"log_file_dir": "./log", "enable_wandb": False},
    }
    config = parse_config(seed)
    assert config.train_args.batch_size == 10
    assert config.train_args.client_optimizer == "sgd"


@pytest.mark.parametrize(("raw", "named"), [
    ({"train_args": {"epoch": 1}}, "train_args.epoch"),
    ({"trainargs": {}}, "trainargs"),
    ({"train_args": {"epochs": "two"}}, "train_args.epochs"),
    ({"train_args": {"epochs": True}}, "train_args.epochs"),
    ({"train_args": {"epochs": 0}}, "train_args.epochs"),
    ({"train_args": {"learning_rate": -1}}, "train_args.learning_rate"),
    ({"train_args": {"client_num_per_round": 10}}, "train_args.client_num_per_round"),
    ({"train_args": {"client_num_in_total": 10}}, "train_args.client_num_in_total"),
    ({"device_args": {"worker_num": 12}}, "device_args.worker_num"),
    ({"train_args": {"federated_optimizer": "FedSGD"}}, "train_args.federated_optimizer"),
    ({"data_args": {"split": [0.5, 0.5, 0.5]}}, "data_args.split"),
    ({"data_args": {"dataset": "N-BaIoT"}}, "data_args.data_cache_dir"),
    ({"detection_args": {"threshold_mode": "magic"}}, "detection_args.threshold_mode"),
    ({"detection_args": {"threshold_quantile": 1.5}}, "detection_args.threshold_quantile"),
    ({"tracking_args": {"enable_wandb": True}}, "tracking_args.enable_wandb"),
    ({"environment_args": {"shell": "x"}}, "environment_args.shell"),
])
def test_bad_keys_are_named(raw: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_config(raw)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_args:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line"):
        load_config(bad)


def test_overrides_are_checked_too() -> None:
    config = Config().with_overrides({"train_args.comm_round": 3})
    assert config.train_args.comm_round == 3
    with pytest.raises(ConfigError, match=r"train_args\.comm_round"):
        Config().with_overrides({"train_args.comm_round": -3})
    with pytest.raises(ConfigError, match="nosuch"):
        Config().with_overrides({"nosuch": 1})
