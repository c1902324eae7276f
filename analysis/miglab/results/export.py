"""`miglab export`: the tidy sample table, one row per valid sample."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import pandas as pd

from miglab.errors import ConfigError
from miglab.results.schema import field_names
from miglab.results.stats import usable_samples

ExportFormat = Literal["csv", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "parquet")


def tidy_samples(frame: pd.DataFrame) -> pd.DataFrame:
    """Schema fields in schema order, then where each sample came from and whether it is
    used by the tables (`usable`: backing verified and every page moved)."""
    columns = [*field_names(), "source", "line"]
    tidy = frame[columns].copy()
    tidy["usable"] = usable_samples(frame)
    return tidy.reset_index(drop=True)


def export_samples(frame: pd.DataFrame, fmt: ExportFormat, output: Path | None) -> None:
    tidy = tidy_samples(frame)
    if fmt == "parquet":
        if output is None or str(output) == "-":
            raise ConfigError("--output", "parquet needs an output file")
        tidy.to_parquet(output, index=False)
        return
    if output is None or str(output) == "-":
        tidy.to_csv(sys.stdout, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    else:
        tidy.to_csv(output, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
