"""Hard limits on what FedIoT accepts from outside: one source of truth for every bound that
more than one module checks (the configuration, the testbed builder, the scoring API, the YAML
loader).

Each limit is far above any real use and far below what would exhaust a machine: a value past
one is refused up front with an error naming it, instead of being accepted and then hanging,
filling the memory or crashing deep inside a run.
"""

from __future__ import annotations

from typing import Final

MAX_SEED: Final[int] = 2**32 - 1
"""Largest random seed (``common_args.random_seed``, ``data_args.testbed_seed``): NumPy's
legacy seeding and most other seeded libraries take 32-bit seeds."""

MAX_TESTBED_SCALE: Final[float] = 10.0
"""Largest testbed scale: scale 1 is about 800,000 feature rows; 10 is about 8 million, several
GB of features, the most one machine can sensibly generate and train on."""

MAX_VIRTUAL_DEVICES_PER_DEVICE: Final[int] = 10_000
"""Most virtual devices one real device's data may be cut into (90,000 devices in all; their
rows are views of each device type's shared rows, :class:`fediot.core.federated.devices.
DeviceStore`)."""

MAX_WINDOW: Final[int] = 100_000
"""Largest window-vote length, in rows (``detection_args.window`` / ``max_window``, the scoring
API's ``window``): N-BaIoT's ws* were 20–82 rows."""

MAX_ROUNDS: Final[int] = 100_000
"""Most federated rounds (``train_args.comm_round``) and round-counted settings."""

MAX_EPOCHS: Final[int] = 10_000
"""Most local epochs per round (``train_args.epochs``)."""

MAX_BATCH_SIZE: Final[int] = 2**20
"""Largest local mini-batch (``train_args.batch_size``)."""

MAX_ROWS: Final[int] = 10**9
"""Largest row count a setting may name (``data_args.attack_cap``)."""

MAX_SECONDS: Final[float] = 365 * 24 * 3600.0
"""Longest duration a setting may name (one year)."""

MAX_RUN_NAME_LENGTH: Final[int] = 128
"""Longest ``tracking_args.run_name`` (a folder name; file systems stop at 255 bytes)."""

MAX_TEXT_BYTES: Final[int] = 1024 * 1024
"""Largest YAML / JSON document read from a file, the command line or the network (1 MiB; a
full configuration is about 2 KB)."""

MAX_NESTING: Final[int] = 64
"""Deepest nesting of mappings and lists in such a document (a configuration nests 2 deep)."""

MAX_INT_DIGITS: Final[int] = 100
"""Longest integer literal in such a document: Python refuses decimal literals of more than
4,300 digits, and YAML's base-60 integers (``1:30:00``) cost time quadratic in their length."""

MAX_SCORE_ROWS: Final[int] = 100_000
"""Default most rows one ``/score`` request may carry (``fediot serve --max-rows``; about 90 MB
as float64 once decoded)."""
