"""``crowdgate export``: the consensus of a project as versioned snapshot folders, and the diff of two.

    crowdgate export PROJECT --out DIR [--status final,consensus] [--as predictions|annotations] [--json]
    crowdgate export snapshot PROJECT --out DIR ...     # the same, spelled out
    crowdgate export diff SNAPSHOT_A SNAPSHOT_B [--json]

Reads ``REDIS_URL`` and ``CROWDGATE_KEY_PREFIX`` like the services; never Label Studio. Exit codes: 0 ok, 1
failure (Redis down, unknown project), 2 usage error, 3 not a snapshot (no or unreadable manifest), 4 a damaged
snapshot (a file missing or not matching its checksum; the message names it).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
from pathlib import Path

import click
import redis

from core.config_folder import guideline_version
from core.settings import Settings, use
from crowdgate.export.data import known_projects, read_state
from crowdgate.export.files import CSV_FILE, JSON_FILE, SnapshotError, read_snapshot, write_snapshot
from crowdgate.export.snapshot import (
    AS_CHOICES,
    build_manifest,
    consensus_csv,
    consensus_json,
    diff_rows,
    export_rows,
    manifest_notes,
    parse_statuses,
    sha256,
    snapshot_name,
)

__all__ = ["export", "export_snapshot"]


def _version() -> str:
    try:
        return importlib.metadata.version("crowdgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def export_snapshot(connection: redis.Redis, prefix: str, project: int, out: Path,
                    statuses: tuple[str, ...] = ("final", "consensus"), as_: str = "predictions",
                    now: dt.datetime | None = None) -> tuple[Path, dict]:
    """Read ``project`` from Redis, write its snapshot under ``out``; (the folder, its manifest)."""
    state = read_state(connection, prefix, project)
    created_at = now or dt.datetime.now(dt.UTC)
    guideline = guideline_version(state.expert_instruction) if state.expert_instruction else None
    name = snapshot_name(created_at, sha256(state.label_config or ""), guideline, sha256(state.policy_text))
    rows = export_rows(state, statuses)
    files = {JSON_FILE: (json.dumps(consensus_json(rows, as_, f"crowdgate-consensus/{name}"), indent=1,
                                    ensure_ascii=False, allow_nan=False) + "\n").encode(),
             CSV_FILE: consensus_csv(rows).encode()}
    manifest = build_manifest(state, rows, created_at=created_at, version=_version(), statuses=statuses, as_=as_,
                              files=files, guideline=guideline)
    return write_snapshot(out, project, name, files, manifest), manifest


class _ExportGroup(click.Group):
    """``crowdgate export PROJECT ...`` is short for ``crowdgate export snapshot PROJECT ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["snapshot", *args]
        return super().parse_args(ctx, args)


@click.group("export", cls=_ExportGroup)
def export() -> None:
    """Consensus export: versioned snapshot folders (Label Studio JSON, CSV, manifest) and their diff.

    `crowdgate export PROJECT --out DIR` writes a snapshot (short for `crowdgate export snapshot`);
    `crowdgate export diff A B` lists the tasks whose label changed between two snapshots.
    """


@export.command("snapshot")
@click.argument("project", type=int)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="the snapshots' root: each goes into DIR/<project>/<time>-c<config>-g<guideline>-p<policy>/")
@click.option("--status", "status", default="final,consensus", show_default=True,
              help="the task statuses to export, comma-separated: final, consensus, escalated, needs-more")
@click.option("--as", "as_", type=click.Choice(AS_CHOICES), default="predictions", show_default=True,
              help="predictions keep the consensus apart from human annotations; annotations make it the answer")
@click.option("--json", "as_json", is_flag=True, help="print the manifest (and the folder) as JSON")
def snapshot_command(project: int, out: Path, status: str, as_: str, as_json: bool) -> None:
    """Write PROJECT's consensus as a new snapshot folder under --out (from Redis alone; never overwrites)."""
    try:
        statuses = parse_statuses(status)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--status") from None
    settings = use(Settings.from_env())
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        known = known_projects(connection, settings.key_prefix)
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis at {settings.redis_url.split('@')[-1]} is not answering: "
                                   f"{type(exc).__name__}") from None
    if project not in known:
        raise click.ClickException(f"crowdgate has seen no project {project} (known: {known or 'none'})")
    folder, manifest = export_snapshot(connection, settings.key_prefix, project, out, statuses, as_)
    if as_json:
        click.echo(json.dumps({"path": str(folder), "manifest": manifest}, indent=2, allow_nan=False))
    else:
        counts = manifest["counts"]
        click.echo(f"snapshot: {folder} ({counts['tasks_exported']} of {counts['tasks_known']} tasks, "
                   + ", ".join(f"{n} {s}" for s, n in counts["by_status"].items()) + ")")


class _Bad(click.ClickException):
    def __init__(self, error: SnapshotError) -> None:
        super().__init__(str(error))
        self.exit_code = error.code


@export.command("diff")
@click.argument("snapshot_a", type=click.Path(path_type=Path))
@click.argument("snapshot_b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the diff as JSON")
def diff_command(snapshot_a: Path, snapshot_b: Path, as_json: bool) -> None:
    """The tasks whose label changed from SNAPSHOT_A to SNAPSHOT_B, those added and those removed (checksums
    checked first: exit 3 when a folder is not a snapshot, 4 when a file is missing or changed)."""
    try:
        manifest_a, rows_a = read_snapshot(snapshot_a)
        manifest_b, rows_b = read_snapshot(snapshot_b)
    except SnapshotError as exc:
        raise _Bad(exc) from None
    found = diff_rows(rows_a, rows_b)
    found.notes.extend(manifest_notes(manifest_a, manifest_b))
    if as_json:
        click.echo(json.dumps({"a": str(snapshot_a), "b": str(snapshot_b), **found.to_dict()}, indent=2))
        return
    for note in found.notes:
        click.echo(f"note: {note}")
    for c in found.changed:
        click.echo(f"changed task {c['task']}: {c['from']} -> {c['to']} ({c['from_status']} -> {c['to_status']})")
    for a in found.added:
        click.echo(f"added task {a['task']}: {a['label']} ({a['status']})")
    for r in found.removed:
        click.echo(f"removed task {r['task']}: {r['label']} ({r['status']})")
    s = found.to_dict()["summary"]
    click.echo(f"{s['changed']} changed, {s['added']} added, {s['removed']} removed, {s['unchanged']} unchanged")
