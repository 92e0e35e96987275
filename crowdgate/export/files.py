"""Snapshot folders on disk: written whole or not at all, and read back with their checksums checked.

A snapshot is written into a ``.partial-*`` folder beside the snapshots, manifest last, then renamed to its name
(one ``rename``, atomic within a filesystem): a folder with a snapshot's name is always complete, and an export
that crashed leaves at most a ``.partial-*`` folder (removed on any error it sees; safe to delete by hand).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crowdgate.export.snapshot import CsvRow, parse_csv, sha256

__all__ = ["CSV_FILE", "JSON_FILE", "MANIFEST_FILE", "SnapshotError", "read_snapshot", "write_file", "write_snapshot"]

JSON_FILE, CSV_FILE, MANIFEST_FILE = "consensus.json", "consensus.csv", "manifest.json"
PARTIAL_PREFIX = ".partial-"


class SnapshotError(Exception):
    """A folder that is not a readable, intact snapshot; ``code`` is the CLI's exit code for it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


NOT_A_SNAPSHOT, DAMAGED = 3, 4


def write_file(path: Path, content: bytes) -> None:
    with path.open("wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())  # on disk before the rename publishes the folder


def write_snapshot(root: Path, project: int, name: str, files: Mapping[str, bytes],
                   manifest: Mapping[str, Any]) -> Path:
    """Write ``files`` and ``manifest.json`` as ``root/<project>/<name>`` and return that folder. A folder of that
    name already there is never touched: this one gets ``-2``, ``-3``, ... appended."""
    parent = root / str(project)
    parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=parent))
    try:
        for file_name, content in files.items():
            write_file(partial / file_name, content)
        write_file(partial / MANIFEST_FILE, (json.dumps(manifest, indent=2, allow_nan=False) + "\n").encode())
        os.chmod(partial, 0o755)  # mkdtemp's 0700 is for the partial folder only
        for attempt in range(1, 1000):
            target = parent / (name if attempt == 1 else f"{name}-{attempt}")
            if target.exists():
                continue
            try:
                os.rename(partial, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # made meanwhile by another export
                    continue
                raise
            return target
        raise FileExistsError(f"no free name for {name} in {parent}")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def read_snapshot(folder: Path) -> tuple[dict[str, Any], dict[int, CsvRow]]:
    """(manifest, CSV rows by task) of a snapshot folder, every file's checksum checked against the manifest."""
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise SnapshotError(f"{folder} is not a folder", NOT_A_SNAPSHOT)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnapshotError(f"{folder} has no {MANIFEST_FILE}: not a crowdgate export snapshot", NOT_A_SNAPSHOT) \
            from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{manifest_path} is not readable JSON: {exc}", NOT_A_SNAPSHOT) from None
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict) or CSV_FILE not in listed:
        raise SnapshotError(f"{manifest_path} lists no files (or not {CSV_FILE}): not an export manifest",
                            NOT_A_SNAPSHOT)
    contents = {}
    for file_name, expected in sorted(listed.items()):
        path = folder / file_name
        try:
            content = path.read_bytes()
        except OSError:
            raise SnapshotError(f"{path} is missing (the manifest lists it)", DAMAGED) from None
        if sha256(content) != (expected or {}).get("sha256"):
            raise SnapshotError(f"{path}: checksum mismatch (sha256 {sha256(content)}, the manifest says "
                                f"{(expected or {}).get('sha256')})", DAMAGED)
        contents[file_name] = content
    try:
        rows = parse_csv(contents[CSV_FILE].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SnapshotError(f"{folder / CSV_FILE}: {exc}", DAMAGED) from None
    return manifest, rows
