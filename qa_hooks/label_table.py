"""The (task, worker, label) table that every batch method takes: its columns, its checks, integer codes."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ("task", "worker", "label")


def check_columns(table: pd.DataFrame) -> None:
    """A clear ValueError unless ``table`` is a DataFrame with the ``task``, ``worker`` and ``label`` columns."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame with columns {COLUMNS}, got {type(table).__name__}")
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"label table lacks column(s) {missing}; it needs {list(COLUMNS)}")


def factorize(values: pd.Series | pd.Index) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and uniques of ``values``; uniques sorted when they can be compared."""
    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:  # mixed types that cannot be ordered keep their order of first appearance
        codes, uniques = pd.factorize(values, sort=False)
    return np.asarray(codes, dtype=np.intp), pd.Index(uniques)
