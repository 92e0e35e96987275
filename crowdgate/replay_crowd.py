"""A real crowd to replay in Label Studio: who labelled which item with what (``NAME.labels.csv``: ``item,worker,
label``; ``NAME.items.jsonl``: one item per line with ``item`` and ``gold``).

Shipped sets live in ``data/crowd`` (rte, temp, wsd; credit in ``data/README.md``); others are read from
``CROWDGATE_CROWD_DATA`` (default ``../shared/data/crowd`` beside the checkout), as ``scripts/crowd_sets.py`` does
for the benchmarks. Reading is pure apart from the two files; a malformed line stops with the file and line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.settings import current

__all__ = ["CrowdSetError", "ReplayCrowd", "crowd_folders"]

REPO_ROOT = Path(__file__).resolve().parents[1]


class CrowdSetError(ValueError):
    """A crowd set that is missing or does not read (the message names the file and line)."""


def crowd_folders() -> tuple[Path, ...]:
    """Where crowd sets are looked for, in order."""
    return (REPO_ROOT / "data" / "crowd", Path(current().crowd_data or REPO_ROOT.parent / "shared" / "data" / "crowd"))


@dataclass(frozen=True)
class ReplayCrowd:
    """``labels``: worker -> item -> label, each worker's items in file order; ``gold``: item -> expert label."""

    name: str
    labels: Mapping[str, Mapping[str, str]]
    gold: Mapping[str, str]

    @classmethod
    def load(cls, name: str, folder: Path | None = None) -> ReplayCrowd:
        folders = (folder,) if folder is not None else crowd_folders()
        found = next((f for f in folders if (f / f"{name}.labels.csv").is_file()), None)
        if found is None:
            raise CrowdSetError(f"crowd set {name!r} not found: no {name}.labels.csv in "
                                f"{', '.join(str(f) for f in folders)} (set CROWDGATE_CROWD_DATA)")
        return cls(name, _labels(found / f"{name}.labels.csv"), _gold(found / f"{name}.items.jsonl"))

    @property
    def workers(self) -> list[str]:
        return list(self.labels)

    @property
    def items(self) -> set[str]:
        return {item for answers in self.labels.values() for item in answers}

    def workers_of(self, item: str) -> list[str]:
        return [w for w, answers in self.labels.items() if item in answers]

    def restricted_to(self, items: set[str]) -> ReplayCrowd:
        """The same crowd on ``items`` only (workers left with nothing drop out)."""
        kept = {w: {i: lab for i, lab in answers.items() if i in items} for w, answers in self.labels.items()}
        return ReplayCrowd(self.name, {w: a for w, a in kept.items() if a},
                           {i: g for i, g in self.gold.items() if i in items})


def _labels(path: Path) -> dict[str, dict[str, str]]:
    labels: dict[str, dict[str, str]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"item", "worker", "label"} - set(reader.fieldnames or ())
        if missing:
            raise CrowdSetError(f"{path}, line 1: the header lacks {', '.join(sorted(missing))}")
        for row in reader:
            item, worker, label = (str(row.get(k) or "").strip() for k in ("item", "worker", "label"))
            if not (item and worker and label):
                raise CrowdSetError(f"{path}, line {reader.line_num}: item, worker and label are all needed")
            labels.setdefault(worker, {})[item] = label
    return labels


def _gold(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    gold: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise CrowdSetError(f"{path}, line {number}: not JSON ({exc})") from None
        if isinstance(row, dict) and row.get("gold") is not None and row.get("item") is not None:
            gold[str(row["item"])] = str(row["gold"])
    return gold
