"""Versioned model artifacts on disk: ``<model dir>/<project>/<kind>/<seq>__<version>.joblib``.

The model dir is ``$CROWDGATE_MODEL_DIR`` (default ``.crowdgate/models``). ``seq`` is a per-(project, kind)
counter claimed with an exclusive hard link, so concurrent savers (several gunicorn workers) never overwrite
each other and "latest" is the highest ``seq``, not a file time. Only the newest ``keep`` files are kept.

Artifacts are pickles (joblib): load them only from a directory this deployment alone writes to.

A model belongs to the Label Studio project and label config it was trained for (its :class:`Provenance`):
the same project id in another Label Studio (a demo's project 1 beside a test's project 1) or a changed config
makes :func:`mismatch` say why it must not answer, and callers fall back instead of predicting with it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import joblib

from core.settings import current

DEFAULT_KEEP = 5
SUFFIX = ".joblib"
_NAME_RE = re.compile(r"^(\d{6,})__(.+)\.joblib$")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")
_PROJECT_UID_RE = re.compile(r"^\d+\.\d+$")


@lru_cache(maxsize=256)
def config_hash(label_config: str) -> str:
    """A short digest of a label config's text (Label Studio sends the stored text unchanged)."""
    return hashlib.sha256(label_config.strip().encode()).hexdigest()[:16]


def project_uid(project: Mapping[str, Any] | str | None) -> str | None:
    """How Label Studio names a project to an ML backend: ``"<id>.<created_at in epoch seconds>"``.

    Accepts that string itself (``project`` of /setup and /predict) or the project as its REST API returns it
    (``id`` and ISO ``created_at``); None when neither is given.
    """
    if isinstance(project, str):
        return project if _PROJECT_UID_RE.match(project) else None
    if not project or project.get("id") is None or not project.get("created_at"):
        return None
    try:
        created = datetime.fromisoformat(str(project["created_at"]))
    except ValueError:
        return None
    return f"{project['id']}.{int(created.timestamp())}"


@dataclass(frozen=True)
class Provenance:
    """The Label Studio project and label config a model was trained for; it answers for no other.

    ``label_studio_url`` is kept for the log only: Label Studio's own hostname and the URL crowdgate reaches it
    at often differ (containers, proxies), so the project uid is what tells instances apart.
    """

    config_hash: str
    project_uid: str | None = None
    label_studio_url: str | None = None

    @classmethod
    def of(cls, label_config: str, project: Mapping[str, Any] | str | None = None,
           label_studio_url: str | None = None) -> Provenance:
        return cls(config_hash(label_config), project_uid(project), label_studio_url or None)

    def mismatch(self, label_config: str, project: str | None = None) -> str | None:
        """Why a model of this provenance must not answer for this config and project uid, else None."""
        if self.config_hash != config_hash(label_config):
            return "it was trained for another label config"
        asked = project_uid(project)
        if self.project_uid and asked and asked != self.project_uid:
            where = f" of {self.label_studio_url}" if self.label_studio_url else ""
            return f"it was trained for Label Studio project {self.project_uid}{where}, not {asked}"
        return None


def mismatch(model: Any, label_config: str, project: str | None = None) -> str | None:
    """Why ``model`` must not answer for this config and project uid, or None when it may.

    A model pickled before provenance was recorded is judged by the label config it carries.
    """
    provenance = getattr(model, "provenance", None)
    if provenance is None:
        own_config = getattr(model, "label_config", None)
        if not isinstance(own_config, str):
            return "it records no label config"
        provenance = Provenance.of(own_config)
    return provenance.mismatch(label_config, project)


def model_dir() -> Path:
    """``CROWDGATE_MODEL_DIR`` of this process's settings."""
    return Path(current().model_dir)


def _safe(part: str) -> str:
    cleaned = _UNSAFE_RE.sub("_", str(part)).strip(".")
    if not cleaned:
        raise ValueError(f"unusable name for an artifact path: {part!r}")
    return cleaned


def _folder(project: str | int, kind: str, root: Path | None) -> Path:
    return (root or model_dir()) / _safe(str(project)) / _safe(kind)


def _entries(folder: Path) -> list[tuple[int, str, Path]]:
    """(seq, version, path) oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), match.group(2), path))
    return sorted(found)


def save(
    project: str | int,
    kind: str,
    model: Any,
    *,
    version: str | None = None,
    keep: int = DEFAULT_KEEP,
    root: Path | None = None,
) -> Path:
    """Write ``model`` as the newest version (default: its ``model_version``); prune to ``keep`` files."""
    version = _safe(version or getattr(model, "model_version", "") or "unversioned")
    folder = _folder(project, kind, root)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=SUFFIX)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            joblib.dump(model, handle)
        seq = max((s for s, _, _ in _entries(folder)), default=0) + 1
        while True:
            target = folder / f"{seq:06d}__{version}{SUFFIX}"
            try:
                # link() fails if the name exists: a concurrent saver that took this seq makes us retry.
                os.link(tmp, target)
                break
            except FileExistsError:
                seq += 1
    finally:
        tmp.unlink(missing_ok=True)
    _prune(folder, version, seq, keep)
    return target


def _prune(folder: Path, version: str, seq: int, keep: int) -> None:
    entries = _entries(folder)
    # A re-saved version keeps only its newest copy.
    doomed = [p for s, v, p in entries if v == version and s < seq]
    remaining = [(s, p) for s, v, p in entries if not (v == version and s < seq)]
    doomed += [p for _, p in remaining[: max(len(remaining) - max(keep, 1), 0)]]
    for path in doomed:
        path.unlink(missing_ok=True)


def versions(project: str | int, kind: str, *, root: Path | None = None) -> list[str]:
    """Stored versions, oldest first."""
    return [v for _, v, _ in _entries(_folder(project, kind, root))]


def latest_version(project: str | int, kind: str, *, root: Path | None = None) -> str | None:
    """Newest stored version without loading it (cheap staleness check for an in-memory model)."""
    entries = _entries(_folder(project, kind, root))
    return entries[-1][1] if entries else None


def load(project: str | int, kind: str, version: str, *, root: Path | None = None) -> Any:
    """The stored model with that version; KeyError when it is not (or no longer) stored."""
    wanted = _safe(version)
    for _, stored, path in reversed(_entries(_folder(project, kind, root))):
        if stored == wanted:
            return joblib.load(path)
    raise KeyError(f"no {kind} version {version!r} for project {project!r}")


def latest(project: str | int, kind: str, *, root: Path | None = None) -> Any | None:
    """The newest stored model, or None when there is none."""
    folder = _folder(project, kind, root)
    for _ in range(5):
        entries = _entries(folder)
        if not entries:
            return None
        try:
            return joblib.load(entries[-1][2])
        except FileNotFoundError:
            # Pruned by a concurrent saver between listing and loading: list again.
            continue
    return None
