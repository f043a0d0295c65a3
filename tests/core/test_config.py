"""The run configuration: every key honoured or rejected with its name."""

from __future__ import annotations

from pathlib import Path

import pytest

from fediot.core.config import (
    Config,
    ConfigError,
    check_simulation,
    dump_config,
    load_config,
    parse_config,
)

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


@pytest.mark.parametrize(("raw", "message"), [
    ({"train_args": {"epoch": 3}}, "cfg.yaml: unknown key train_args.epoch (did you mean "
                                   "train_args.epochs?)"),
    ({"train_args": {"learningrate": 0.1}}, "(did you mean train_args.learning_rate or "
                                            "train_args.server_learning_rate?)"),
    ({"data_args": {"epochs": 3}}, "unknown key data_args.epochs (did you mean "
                                   "train_args.epochs?)"),  # the right key, the wrong section
    ({"train_arg": {"epochs": 3}}, "unknown section 'train_arg' (did you mean train_args"),
    ({"environment_args": {"bootstrp": 1}}, "(did you mean environment_args.bootstrap?)"),
])
def test_a_misspelt_key_gets_the_closest_known_keys(raw: dict[str, object],
                                                    message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, source="cfg.yaml")
    assert message in str(caught.value), str(caught.value)


def test_an_unlike_key_gets_no_suggestion() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"train_args": {"zzz": 1}}, source="cfg.yaml")
    assert str(caught.value) == "cfg.yaml: unknown key train_args.zzz"


def test_set_and_file_keys_get_suggestions(tmp_path: Path) -> None:
    from fediot.faces.cli.runs_common import resolve_config

    with pytest.raises(ConfigError) as caught:
        resolve_config(None, {}, ["train_args.epoch=3"])
    assert str(caught.value) == ("overrides: unknown key train_args.epoch (did you mean "
                                 "train_args.epochs?)")
    with pytest.raises(ConfigError, match=r"did you mean train_args\.epochs\?"):
        resolve_config(None, {}, ["train_arg.epochs=3"])
    path = tmp_path / "typo.yaml"
    path.write_text("validation_args:\n  early_stoping_patience: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(
        f"{path}: unknown key validation_args.early_stoping_patience (did you mean "
        "validation_args.early_stopping_patience or")


def test_cross_silo_is_refused_here_naming_the_deployment_commands() -> None:
    check_simulation(Config())
    with pytest.raises(ConfigError) as caught:
        check_simulation(Config().with_overrides({"common_args.training_type": "cross_silo"}))
    assert str(caught.value).startswith("common_args.training_type: 'cross_silo' runs on a "
                                        "real server and real devices: start `fediot server`")


# --- hardened inputs: every number bounded, every section a mapping, names safe -------------

N_DEVICES = 9


@pytest.mark.parametrize(("raw", "named", "problem"), [
    ({"environment_args": 5}, "environment_args", "must be a mapping of keys, got int 5"),
    ({"train_args": [1, 2]}, "train_args", "must be a mapping of keys, got list"),
    ({"train_args": "fast"}, "train_args", "must be a mapping of keys, got str"),
    ({"common_args": {"random_seed": 2**64}}, "common_args.random_seed",
     "must be an integer in 0…4,294,967,295, got 18446744073709551616"),
    ({"common_args": {"random_seed": -1}}, "common_args.random_seed", "in 0…4,294,967,295"),
    ({"data_args": {"testbed_seed": 2**32}}, "data_args.testbed_seed", "in 0…4,294,967,295"),
    ({"train_args": {"batch_size": 1e20}}, "train_args.batch_size",
     "expected int, got float 1e+20"),
    ({"train_args": {"batch_size": 2**40}}, "train_args.batch_size", "in 1…1,048,576"),
    ({"train_args": {"batch_size": "1e20"}}, "train_args.batch_size",
     "YAML reads a number without a dot, such as 1e9, as text"),
    ({"train_args": {"epochs": 10**6}}, "train_args.epochs", "in 1…10,000"),
    ({"train_args": {"comm_round": 10**9}}, "train_args.comm_round", "in 1…100,000"),
    ({"train_args": {"lr_step_rounds": 0}}, "train_args.lr_step_rounds", "in 1…100,000"),
    ({"train_args": {"client_num_in_total": 0}}, "train_args.client_num_in_total", "in 1…"),
    ({"train_args": {"client_num_min_replies": 10**12}}, "train_args.client_num_min_replies",
     "in 1…90,000"),
    ({"data_args": {"virtual_devices_per_device": 10**12}},
     "data_args.virtual_devices_per_device", "in 1…10,000"),
    ({"data_args": {"virtual_devices_per_device": 1e12}},
     "data_args.virtual_devices_per_device", "expected int, got float"),
    ({"data_args": {"testbed_scale": 1e9}}, "data_args.testbed_scale",
     "must be a finite number in (0, 10]"),
    ({"data_args": {"testbed_scale": 0}}, "data_args.testbed_scale", "in (0, 10]"),
    ({"data_args": {"attack_cap": 10**12}}, "data_args.attack_cap", "in 0…1,000,000,000"),
    ({"data_args": {"warmup_settle_seconds": 1e300}}, "data_args.warmup_settle_seconds",
     "finite number in [0, "),
    ({"data_args": {"split": [float("nan"), 0.5, 0.5]}}, "data_args.split[0]",
     "must be a finite number, got nan"),
    ({"detection_args": {"threshold_k": float("nan")}}, "detection_args.threshold_k",
     "must be a finite number, got nan"),
    ({"detection_args": {"threshold_k": float("inf")}}, "detection_args.threshold_k",
     "must be a finite number, got inf"),
    ({"detection_args": {"threshold_k": 10**400}}, "detection_args.threshold_k",
     "must be a finite number, got 1000000"),
    ({"detection_args": {"window": 2**63}}, "detection_args.window", "in 0…100,000"),
    ({"detection_args": {"max_window": 0}}, "detection_args.max_window", "in 1…100,000"),
    ({"validation_args": {"early_stopping_patience": -1}},
     "validation_args.early_stopping_patience", "in 0…100,000"),
    ({"validation_args": {"frequency_of_the_test": 10**9}},
     "validation_args.frequency_of_the_test", "in 0…100,000"),
    ({"train_args": {"learning_rate": 1e6}}, "train_args.learning_rate", "in (0, 100]"),
    ({"train_args": {"server_tau": 0.0}}, "train_args.server_tau", "in (0, 1000]"),
    ({"train_args": {"trimmed_beta": 0.5}}, "train_args.trimmed_beta", "in [0, 0.5)"),
    ({"train_args": {"federated_optimizer": "Krum", "krum_malicious": 100}},
     "train_args.krum_malicious",
     "Krum needs client_num_per_round ≥ 2 × krum_malicious + 3; 9 devices per round "
     "tolerate at most 3, got 100"),
    ({"train_args": {"federated_optimizer": "Krum", "krum_malicious": 4}},
     "train_args.krum_malicious", "tolerate at most 3, got 4"),
    ({"train_args": {"krum_malicious": -2}}, "train_args.krum_malicious", "in -1…90,000"),
    ({"train_args": {"federated_optimizer": "MultiKrum", "krum_malicious": 4}},
     "train_args.krum_malicious", "MultiKrum needs client_num_per_round ≥ 2 × krum_malicious"),
    ({"train_args": {"federated_optimizer": "Bulyan", "krum_malicious": 2}},
     "train_args.krum_malicious",
     "Bulyan needs client_num_per_round ≥ 4 × krum_malicious + 3; 9 devices per round "
     "tolerate at most 1, got 2"),
    ({"train_args": {"federated_optimizer": "Bulyan", "client_num_per_round": 2}},
     "train_args.client_num_per_round", "Bulyan needs at least 3 devices per round"),
    ({"train_args": {"federated_optimizer": "Krum", "krum_malicious": 3, "krum_selected": 7}},
     "train_args.krum_selected", "at most client_num_per_round − krum_malicious = 6"),
    ({"train_args": {"robust_statistics": "maybe"}}, "train_args.robust_statistics",
     "must be one of"),
    ({"train_args": {"robust_statistics": "median"}, "comm_args": {"secure_aggregation": True}},
     "train_args.robust_statistics",
     "median cannot combine with comm_args.secure_aggregation"),
    ({"train_args": {"robust_statistics": "trimmed_mean"},
      "comm_args": {"secure_aggregation": True}}, "train_args.robust_statistics",
     "each device's own statistics"),
    ({"train_args": {"federated_optimizer": "FedMedian"},
      "comm_args": {"secure_aggregation": True}}, "comm_args.secure_aggregation",
     "needs a linear aggregation"),
    ({"train_args": {"federated_optimizer": "Krum", "client_num_per_round": 2}},
     "train_args.client_num_per_round", "Krum needs at least 3 devices per round"),
    ({"device_args": {"worker_num": True}}, "device_args.worker_num", "expected int, got bool"),
    ({"data_args": {"data_cache_dir": "data\x00/x"}}, "data_args.data_cache_dir",
     "contains a NUL character"),
    ({"tracking_args": {"log_file_dir": "runs\x00"}}, "tracking_args.log_file_dir",
     "contains a NUL character"),
    ({"comm_args": {"ray_address": "\x00"}}, "comm_args.ray_address", "NUL"),
    ({"tracking_args": {"run_name": ".."}}, "tracking_args.run_name",
     "must not start with '.' or '-'"),
    ({"tracking_args": {"run_name": "."}}, "tracking_args.run_name", "must not start with"),
    ({"tracking_args": {"run_name": ".hidden"}}, "tracking_args.run_name", "must not start"),
    ({"tracking_args": {"run_name": "-rf"}}, "tracking_args.run_name", "must not start"),
    ({"tracking_args": {"run_name": "../escape"}}, "tracking_args.run_name",
     "one folder name, without '/'"),
    ({"tracking_args": {"run_name": "a/b"}}, "tracking_args.run_name", "without '/'"),
    ({"tracking_args": {"run_name": "a\\b"}}, "tracking_args.run_name", "without '/'"),
    ({"tracking_args": {"run_name": "line\nbreak"}}, "tracking_args.run_name",
     "control characters"),
    ({"tracking_args": {"run_name": "x" * 129}}, "tracking_args.run_name",
     "at most 128 characters"),
])
def test_hostile_values_are_refused_naming_the_key(raw: dict[str, object], named: str,
                                                   problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, source="cfg.yaml")
    message = str(caught.value)
    assert message.startswith(f"cfg.yaml: {named}") and problem in message, message
    assert "\n" not in message and len(message) < 300


def test_bounds_admit_real_configurations() -> None:
    config = parse_config({
        "common_args": {"random_seed": 2**32 - 1},
        "data_args": {"testbed_scale": 10, "virtual_devices_per_device": 100,
                      "testbed_seed": 0},
        "train_args": {"federated_optimizer": "Krum", "krum_malicious": 3,
                       "client_num_in_total": 900, "client_num_per_round": 9,
                       "batch_size": 2**20, "comm_round": 100_000},
        "detection_args": {"window": 100_000, "threshold_k": 0},
        "tracking_args": {"run_name": "my run: v1.2 (Krum)"},
        "environment_args": None,
    })
    assert config.data_args.testbed_scale == 10.0 and config.train_args.krum_malicious == 3
    assert parse_config({"environment_args": {"bootstrap": "x"}}) == Config()


def test_a_huge_value_is_echoed_short() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"train_args": {"epochs": [[1] * 100_000] * 3}})
    assert len(str(caught.value)) < 200


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_hostile_files_are_one_line_naming_file_and_line(tmp_path: Path) -> None:
    cases = {
        "latin1.yaml": (b"train_args:\n  run: caf\xe9\n", "latin1.yaml: line 2: not UTF-8"),
        "nul.yaml": (b"train_args:\n  epochs: 1\x00\n", "nul.yaml: line 2: NUL byte"),
        "utf16.yaml": ("a: 1\n".encode("utf-16"), "utf16.yaml: line 1: NUL byte"),
        "deep.yaml": (b"[" * 5000 + b"]" * 5000, "deep.yaml: line 1, column 65: nested more "
                                                  "than 64 levels deep"),
        "bomb.yaml": (b"a: &a [x, x]\nb: [*a, *a]\n", "bomb.yaml: line 2, column 5: alias *a"),
        "huge.yaml": (b"#" * (2 * 1024 * 1024), "huge.yaml: larger than the limit"),
        "bigint.yaml": (b"detection_args:\n  threshold_k: 1" + b"0" * 400 + b"\n",
                        "bigint.yaml: line 2, column 16: an integer of 401 characters"),
        "float.yaml": (b"detection_args:\n  threshold_k: 1.0e+400\n",
                       "float.yaml: detection_args.threshold_k: must be a finite number, "
                       "got inf"),
        "nan.yaml": (b"detection_args:\n  threshold_k: .nan\n",
                     "nan.yaml: detection_args.threshold_k: must be a finite number"),
        "section.yaml": (b"environment_args: 5\n",
                         "section.yaml: environment_args must be a mapping"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path / name, data))
        assert message in str(caught.value), (name, str(caught.value))
        assert "\n" not in str(caught.value), name
    with pytest.raises(ConfigError, match="cannot contain a NUL character"):
        load_config(tmp_path / "a\x00b.yaml")


def test_set_overrides_go_through_the_safe_loader() -> None:
    from fediot.faces.cli.runs_common import resolve_config

    assert resolve_config(None, {}, ["train_args.epochs=3"]).train_args.epochs == 3
    cases = {
        "train_args.epochs=" + "[" * 100 + "]" * 100: "--set train_args.epochs: line 1, "
                                                      "column 65: nested more than 64",
        "train_args.epochs={a: &a [1], b: *a}": "--set train_args.epochs: line 1, column 16: "
                                                "alias *a",
        "common_args.random_seed=18446744073709551616": "common_args.random_seed: must be an "
                                                        "integer in 0…4,294,967,295",
        "train_args.batch_size=1e20": "train_args.batch_size: expected int, got str '1e20'",
        "tracking_args.run_name=..": "tracking_args.run_name: must not start with",
        "tracking_args.log_file_dir=a\x00b": "--set tracking_args.log_file_dir: line 1: NUL",
    }
    for item, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            resolve_config(None, {}, [item])
        assert message in str(caught.value), (item, str(caught.value))


def test_the_configuration_a_server_sends_is_read_safely() -> None:
    from fediot.core.config import parse_config_text

    assert parse_config_text("train_args: {epochs: 2}", "run config config-json"
                             ).train_args.epochs == 2
    with pytest.raises(ConfigError, match=r"^run config config-json: line 1, column \d+: "
                                          "alias"):
        parse_config_text("{a: &a [1], train_args: *a}", "run config config-json")
    with pytest.raises(ConfigError, match="run config config-json: line 1: NUL byte"):
        parse_config_text(b"train_args: {}\x00", "run config config-json")


def test_secure_aggregation_accepts_pooled_statistics() -> None:
    for choice in ("auto", "off"):
        config = parse_config({"train_args": {"robust_statistics": choice},
                               "comm_args": {"secure_aggregation": True}})
        assert config.comm_args.secure_aggregation
