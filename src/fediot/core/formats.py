"""Names of FedIoT's file formats, in one module light enough for the CLI's help (listing them
loads neither torch nor pyarrow)."""

from __future__ import annotations

from typing import Final, Literal

FEATURE_FILE_FORMATS: Final[tuple[str, ...]] = ("parquet", "csv")
"""Formats the testbed writes its feature files in (``fediot data synth --format``)."""

ExportFormat = Literal["torchscript", "onnx"]
EXPORT_FORMATS: Final[tuple[ExportFormat, ...]] = ("torchscript", "onnx")
"""Formats ``fediot export`` writes the scoring graph in."""

EXPORT_SUFFIXES: Final[dict[str, str]] = {"torchscript": ".pt", "onnx": ".onnx"}
"""The file suffix of each export format."""
