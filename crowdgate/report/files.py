"""The report as files: ``annotators.csv`` and ``tasks.csv`` in a folder, one JSON document, or the payroll CSV."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from crowdgate.report.cost import AnnotatorCost
from crowdgate.report.data import AnnotatorRow, ProjectReport, TaskRow

__all__ = ["PAYROLL_COLUMNS", "write_csv", "write_json", "write_payroll"]

PAYROLL_COLUMNS = ("annotator", "email", "tier", "labels", "paid_hours", "wage", "fee", "total", "currency",
                   "period_start", "period_end")


def _cell(value: object) -> object:
    if isinstance(value, tuple | list):
        return "; ".join(str(v) for v in value)
    return "" if value is None else value


def write_csv(report: ProjectReport, folder: Path) -> list[Path]:
    """``annotators.csv`` (one row per annotator, every column of the table) and ``tasks.csv`` (every task)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, kind, rows in (("annotators.csv", AnnotatorRow, report.annotators), ("tasks.csv", TaskRow, report.tasks)):
        columns = [f.name for f in fields(kind)]
        path = folder / name
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(getattr(row, c)) for c in columns])
        written.append(path)
    return written


def write_json(report: ProjectReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
    return path


def _iso(value: float | None) -> str:
    return "" if value is None else dt.datetime.fromtimestamp(value, dt.UTC).isoformat().replace("+00:00", "Z")


def write_payroll(rows: Sequence[AnnotatorCost], path: Path, currency: str, since: float | None = None,
                  until: float | None = None) -> Path:
    """One row per annotator with labels in the period (``PAYROLL_COLUMNS``): paid hours are the sum of lead
    times, money rounded to 1/10,000 of the currency; the period's ends are ISO 8601 UTC (empty: open)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(PAYROLL_COLUMNS)
        for r in rows:
            if r.labels == 0 and r.paid_hours == 0:
                continue  # nothing to pay in this period
            writer.writerow([r.annotator, r.email or "", r.tier, r.labels, f"{r.paid_hours:.4f}", f"{r.wage:.4f}",
                             f"{r.fee:.4f}", f"{r.total:.4f}", currency, _iso(since), _iso(until)])
    return path
