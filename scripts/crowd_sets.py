"""Load the real crowd label sets (``item,worker,label`` files plus gold) as (task, worker, label) tables.

Shipped sets (Apache-2.0, see ``data/README.md``) live in ``data/crowd``; the others are read from
``$CROWDGATE_CROWD_DATA`` (default ``../shared/data/crowd`` beside the checkout) and are benchmark-only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from core.settings import current

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DIR = REPO_ROOT / "data" / "crowd"
SHIPPED = ("rte", "temp", "wsd")


def external_dir() -> Path:
    """Folder holding the sets that may not be shipped."""
    return Path(current().crowd_data or REPO_ROOT.parent / "shared" / "data" / "crowd")


def dataset_dir(name: str) -> Path | None:
    """Where set ``name`` lives, or None when it is not on this machine."""
    for folder in (SHIPPED_DIR, external_dir()):
        if (folder / f"{name}.labels.csv").is_file():
            return folder
    return None


def available(name: str) -> bool:
    return dataset_dir(name) is not None


def _require(name: str) -> Path:
    folder = dataset_dir(name)
    if folder is None:
        raise FileNotFoundError(
            f"crowd set {name!r} not found in {SHIPPED_DIR} or {external_dir()} (set CROWDGATE_CROWD_DATA)"
        )
    return folder


def load_labels(name: str) -> pd.DataFrame:
    """The set's labels as a DataFrame with string columns ``task``, ``worker``, ``label``."""
    frame = pd.read_csv(_require(name) / f"{name}.labels.csv", dtype=str)
    return frame.rename(columns={"item": "task"})[["task", "worker", "label"]]


def load_items(name: str) -> pd.DataFrame:
    """The set's items indexed by ``task``: column ``gold`` plus any text fields, all strings."""
    rows = [json.loads(line) for line in (_require(name) / f"{name}.items.jsonl").read_text().splitlines() if line]
    frame = pd.DataFrame(rows).astype({"item": str, "gold": str})
    return frame.rename(columns={"item": "task"}).set_index("task")


def load_gold(name: str) -> pd.Series:
    """Gold label per task."""
    return load_items(name)["gold"]
