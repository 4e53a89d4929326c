"""Read and write the tables that `toto forecast` works on: CSV (or TSV) and Parquet, by file extension."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from toto.validation import InputError

_CSV = (".csv", ".csv.gz")
_TSV = (".tsv", ".tsv.gz")
_PARQUET = (".parquet", ".pq")


def read_table(path: str | Path) -> pd.DataFrame:
    """Load a CSV, TSV or Parquet file; a missing, empty or malformed file is an `InputError`."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(_CSV + _TSV + _PARQUET):
        raise InputError(f"{path}: unknown file type; use a .csv, .tsv or .parquet file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if name.endswith(_PARQUET):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if name.endswith(_TSV) else ",")
    except pd.errors.EmptyDataError as error:
        raise InputError(f"{path}: the file is empty") from error
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read it as {path.suffix.lstrip('.')}: {error}") from error


def check_output_type(path: str | Path) -> Path:
    """A path `write_table` can write, by its extension; anything else is an `InputError`. Entry points call it
    before any work, so that a wrong extension does not cost the forecast."""
    path = Path(path)
    if not path.name.lower().endswith(_CSV + _PARQUET):
        raise InputError(f"{path}: unknown output type; use a .csv or .parquet file")
    return path


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write a table as CSV or Parquet by extension, creating the folder if needed."""
    path = check_output_type(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.lower().endswith(_PARQUET):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
