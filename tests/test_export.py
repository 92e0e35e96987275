"""``crowdgate export``: consensus snapshots written from a private Redis that the real event job filled, their
manifest and checksums, atomic writes, and the diff of two snapshots."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import crowdgate.export.files as export_files
from crowdgate.cli import cli
from crowdgate.export.cli import export_snapshot
from crowdgate.export.snapshot import snapshot_name
from crowdgate.pipeline import handle_events
from qa_hooks.events import parse_body
from qa_hooks.ledger import Ledger
from qa_hooks.refit import refit_project
from routing.data_manager import task_status
from routing.state import RoutingState
from tests.conftest import fixture_json

PROJECT, PREFIX = 4, "texport"
GUIDELINE = '<h1>Sentiment</h1><p class="guideline-version">Guideline version 3.1</p><p>Pick one.</p>'
MULTI_CONFIG = ('<View><Text name="text" value="$text"/><Choices name="tags" toName="text" choice="multiple">'
                '<Choice value="a"/><Choice value="b"/><Choice value="c"/></Choices></View>')
NOW = dt.datetime(2026, 12, 7, 15, 30, 0, 123456, tzinfo=dt.UTC)


def _event(task: int, person: int, choices: list[str], annotation: int, *, meta: dict | None = None,
           label_config: str | None = None, project: int = PROJECT) -> dict[str, Any]:
    """One ANNOTATION_CREATED body as Label Studio 1.23.2 sends it, parsed as the receiver does."""
    body = fixture_json("webhook_annotation_created.json")
    body["project"].update(id=project, expert_instruction=GUIDELINE)
    if label_config:
        body["project"]["label_config"] = label_config
    region = {**body["annotation"]["result"][0], "value": {"choices": choices}}
    if label_config:
        region["from_name"] = "tags"
    body["annotation"].update(id=annotation, unique_id=str(uuid.uuid4()), task=task, completed_by=person,
                              project=project, lead_time=3.0, result=[region])
    body["task"].update(id=task, project=project, data={"text": f"text of task {task}",
                                                       "crowdgate_status": "consensus"},
                        meta=meta or {})
    return parse_body(json.dumps(body).encode()).to_dict()


def crowd(tasks: int = 8, annotators: int = 5) -> list[dict[str, Any]]:
    """Every annotator labels every task: mostly Positive, annotator 5 always Negative, every third task mostly
    Negative, every fourth split 2 to 3 (no consensus: "needs more"); task 1's gold answer (in its meta) is
    Positive, task 3's Positive too (the crowd says Negative)."""
    events, annotation = [], 1000
    for task in range(1, tasks + 1):
        for person in range(1, annotators + 1):
            annotation += 1
            mostly = "Negative" if task % 3 == 0 else "Positive"
            label = "Negative" if person == annotators or (task % 4 == 0 and person > 2) else mostly
            meta = {"gold": "Positive"} if task in (1, 3) else None
            events.append(_event(task, person, [label], annotation, meta=meta))
    return events


def record(connection: redis.Redis, events: list[dict[str, Any]]) -> None:
    outcomes = handle_events(events, PREFIX, connection)  # the worker's job: record, score, route
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes


@pytest.fixture
def seeded(redis_conn) -> redis.Redis:
    record(redis_conn, crowd())
    return redis_conn


@pytest.fixture
def env(redis_service, seeded) -> dict[str, str]:
    return {"REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX}


def _csv(folder: Path) -> list[dict[str, str]]:
    with (folder / "consensus.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _statuses(connection: redis.Redis) -> dict[int, tuple[str, dict[str, Any]]]:
    ledger, routing = Ledger(connection, PREFIX), RoutingState(connection, PREFIX)
    out = {}
    for task in range(1, 9):
        score = ledger.task_score(PROJECT, task)
        out[task] = task_status(routing.route(PROJECT, task).status, score["consensus_reached"]), score
    return out


def test_snapshot_files_manifest_and_csv_match_the_ledger(seeded, tmp_path):
    folder, manifest = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW)
    assert folder.parent == tmp_path / str(PROJECT)
    assert folder.name.startswith("20261207T153000.123456Z-c") and "-g3.1-p" in folder.name
    assert sorted(p.name for p in folder.iterdir()) == ["consensus.csv", "consensus.json", "manifest.json"]
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    for name in ("consensus.csv", "consensus.json"):
        content = (folder / name).read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}

    # the CSV is the ledger's consensus of every task whose status is final or consensus
    expected = {t: s for t, (status, s) in _statuses(seeded).items() if status in ("final", "consensus")}
    assert len(expected) >= 4  # the crowd reaches consensus on most tasks
    rows = _csv(folder)
    assert [int(r["task"]) for r in rows] == sorted(expected)
    for row in rows:
        score = expected[int(row["task"])]
        assert row["label"] == score["consensus"] and int(row["labels"]) == score["n"]
        assert float(row["confidence"]) == pytest.approx(score["confidence"], abs=1e-6)  # no refit yet: the ledger's
        assert row["status"] in ("final", "consensus")

    tasks = json.loads((folder / "consensus.json").read_text())
    assert [t["id"] for t in tasks] == [int(r["task"]) for r in rows]
    first = tasks[0]
    assert first["data"] == {"text": f"text of task {first['id']}"}  # crowdgate's own columns left out
    prediction = first["predictions"][0]
    assert prediction["model_version"] == f"crowdgate-consensus/{folder.name}"
    assert prediction["result"] == [{"id": f"cg{first['id']}", "from_name": "sentiment", "to_name": "text",
                                     "type": "choices", "value": {"choices": [rows[0]["label"]]}}]

    assert manifest["project"] == PROJECT and manifest["created_at"] == "2026-12-07T15:30:00.123456Z"
    config = seeded.hget(Ledger(seeded, PREFIX).keys.project_info(PROJECT), "label_config")
    assert manifest["label_config"]["sha256"] == hashlib.sha256(config).hexdigest()
    assert manifest["label_config"]["categorical"] and manifest["label_config"]["control"] == "sentiment"
    assert manifest["guideline"] == {"version": "3.1", "sha256": hashlib.sha256(GUIDELINE.encode()).hexdigest(),
                                     "reason": None}
    policy_text, _ = RoutingState(seeded, PREFIX).policy_source(PROJECT)
    assert manifest["policy"]["sha256"] == hashlib.sha256(policy_text.encode()).hexdigest()
    assert manifest["policy"]["version"] == 1
    assert manifest["counts"]["tasks_known"] == 8 and manifest["counts"]["tasks_exported"] == len(rows)
    assert sum(manifest["counts"]["labels"].values()) == len(rows)
    assert manifest["read_from"]["label_studio"] is False
    # gold: task 1's consensus (Positive) is right, task 3's (Negative) wrong, where both are exported
    gold_rows = {int(r["task"]): r["label"] for r in rows if int(r["task"]) in (1, 3)}
    assert manifest["metrics"]["gold_tasks"] == len(gold_rows)
    if gold_rows:
        right = sum(label == "Positive" for label in gold_rows.values())
        assert manifest["metrics"]["gold_accuracy"] == pytest.approx(right / len(gold_rows))
    agreements = [s["agreement"] for t, s in expected.items() if s["n"] >= 2]
    assert manifest["metrics"]["mean_agreement"] == pytest.approx(sum(agreements) / len(agreements))


def test_confidence_is_the_refits_posterior_once_there_is_one(seeded, tmp_path):
    assert refit_project(PROJECT, PREFIX, seeded)["refitted"]
    folder, manifest = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW)
    posteriors = seeded.hgetall(Ledger(seeded, PREFIX).keys.truth_posteriors(PROJECT))
    classes = manifest["label_config"]["classes"]
    rows = _csv(folder)
    assert rows and manifest["confidence"] == {"refit": len(rows), "ledger": 0}
    for row in rows:
        posterior = json.loads(posteriors[row["task"].encode()])
        assert float(row["confidence"]) == pytest.approx(posterior[classes.index(row["label"])], abs=1e-6)
    assert manifest["fit_version"] == 1


def test_as_annotations_and_the_status_filter(seeded, tmp_path):
    folder, manifest = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, statuses=("needs more",),
                                       as_="annotations", now=NOW)
    expected = sorted(t for t, (status, s) in _statuses(seeded).items() if status == "needs more" and s["consensus"])
    assert expected == [4, 8]
    tasks = json.loads((folder / "consensus.json").read_text())
    assert [t["id"] for t in tasks] == expected
    for t in tasks:
        assert "predictions" not in t and t["annotations"][0]["ground_truth"] is False
    assert manifest["exported_as"] == "annotations" and manifest["statuses"] == ["needs more"]


def test_same_time_twice_makes_a_second_folder_and_never_overwrites(seeded, tmp_path):
    first, _ = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    second, _ = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW)
    assert second != first and second.name == first.name + "-2"
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    # the same state gives the same bytes (stable region ids): DVC stores it once
    assert (second / "consensus.csv").read_bytes() == before["consensus.csv"]


def test_a_failing_write_leaves_no_snapshot_folder(seeded, tmp_path, monkeypatch):
    real, calls = export_files.write_file, []

    def fails_on_the_second_file(path: Path, content: bytes) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, content)

    monkeypatch.setattr(export_files, "write_file", fails_on_the_second_file)
    with pytest.raises(OSError, match="No space"):
        export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW)
    assert calls[0] == "consensus.json"  # one file was written before the failure
    assert list((tmp_path / str(PROJECT)).iterdir()) == []  # neither a snapshot nor the partial folder


def test_names_sort_by_time_and_say_what_made_them():
    early = snapshot_name(NOW, "a" * 64, "3", "b" * 64)
    late = snapshot_name(NOW + dt.timedelta(seconds=1), "0" * 64, None, "f" * 64)
    assert early == "20261207T153000.123456Z-caaaaaaaaaaaa-g3-pbbbbbbbb"
    assert late == "20261207T153001.123456Z-c000000000000-gnone-pffffffff" and sorted([late, early])[0] == early


def test_diff_after_a_task_is_rescored_with_new_submissions(seeded, tmp_path, env):
    first, _ = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW)
    assert {r["task"]: r["label"] for r in _csv(first)}["2"] == "Positive"
    # eight newcomers answer Negative on task 2: the event job rescores it and its consensus turns
    record(seeded, [_event(2, person, ["Negative"], 2000 + person) for person in range(6, 14)])
    assert Ledger(seeded, PREFIX).task_score(PROJECT, 2)["consensus"] == "Negative"
    second, _ = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW + dt.timedelta(minutes=5))

    result = CliRunner().invoke(cli, ["export", "diff", str(first), str(second), "--json"], env=env)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [(c["task"], c["from"], c["to"]) for c in found["changed"]] == [(2, "Positive", "Negative")]
    assert found["added"] == [] and found["removed"] == []
    assert found["summary"] == {"changed": 1, "added": 0, "removed": 0, "unchanged": len(_csv(first)) - 1}

    text = CliRunner().invoke(cli, ["export", "diff", str(first), str(second)], env=env)
    assert text.exit_code == 0 and "changed task 2: Positive -> Negative" in text.output
    assert "1 changed, 0 added, 0 removed" in text.output


def test_diff_of_a_filtered_snapshot_lists_added_and_removed(seeded, tmp_path, env):
    everything, _ = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW,
                                    statuses=("final", "consensus", "escalated", "needs more"))
    accepted, _ = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW + dt.timedelta(seconds=1))
    runner = CliRunner()
    removed = json.loads(runner.invoke(cli, ["export", "diff", str(everything), str(accepted), "--json"],
                                       env=env).stdout)
    added = json.loads(runner.invoke(cli, ["export", "diff", str(accepted), str(everything), "--json"],
                                     env=env).stdout)
    missing = sorted(set(int(r["task"]) for r in _csv(everything)) - set(int(r["task"]) for r in _csv(accepted)))
    assert missing and [r["task"] for r in removed["removed"]] == missing == [a["task"] for a in added["added"]]
    assert any("statuses differ" in note for note in removed["notes"])


def test_diff_refuses_bad_input_naming_the_file(seeded, tmp_path, env):
    good, _ = export_snapshot(seeded, PREFIX, PROJECT, tmp_path, now=NOW)
    runner = CliRunner()
    empty = tmp_path / "not-a-snapshot"
    empty.mkdir()
    result = runner.invoke(cli, ["export", "diff", str(empty), str(good)], env=env)
    assert result.exit_code == 3 and "manifest.json" in result.output and "Traceback" not in result.output
    assert runner.invoke(cli, ["export", "diff", str(good), str(tmp_path / "nowhere")], env=env).exit_code == 3

    changed = tmp_path / "changed"
    export_snapshot(seeded, PREFIX, PROJECT, changed, now=NOW)
    (folder,) = (changed / str(PROJECT)).iterdir()
    original = (folder / "consensus.csv").read_bytes()
    with (folder / "consensus.csv").open("a", encoding="utf-8") as f:
        f.write("99,Positive,0.9,consensus,3\n")
    result = runner.invoke(cli, ["export", "diff", str(good), str(folder)], env=env)
    assert result.exit_code == 4 and "consensus.csv: checksum mismatch" in result.output
    (folder / "consensus.csv").write_bytes(original)
    assert runner.invoke(cli, ["export", "diff", str(good), str(folder)], env=env).exit_code == 0
    (folder / "consensus.json").unlink()
    result = runner.invoke(cli, ["export", "diff", str(good), str(folder)], env=env)
    assert result.exit_code == 4 and "consensus.json is missing" in result.output


def test_the_command_writes_a_snapshot_and_refuses_what_it_cannot_do(env, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(PROJECT), "--out", str(tmp_path), "--json"], env=env)
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    folder = Path(written["path"])
    assert folder.is_dir() and written["manifest"]["counts"]["tasks_known"] == 8
    spelled = runner.invoke(cli, ["export", "snapshot", str(PROJECT), "--out", str(tmp_path)], env=env)
    assert spelled.exit_code == 0 and spelled.output.startswith("snapshot: ")
    assert len(list((tmp_path / str(PROJECT)).iterdir())) == 2

    unknown = runner.invoke(cli, ["export", "77", "--out", str(tmp_path)], env=env)
    assert unknown.exit_code == 1 and "no project 77" in unknown.output
    bad = runner.invoke(cli, ["export", str(PROJECT), "--out", str(tmp_path), "--status", "done"], env=env)
    assert bad.exit_code == 2 and "unknown status done" in bad.output
    assert runner.invoke(cli, ["export", str(PROJECT)], env=env).exit_code == 2  # --out is required
    for args in (["export"], ["export", "snapshot"], ["export", "diff"]):
        helped = runner.invoke(cli, [*args, "--help"])
        assert helped.exit_code == 0 and "Usage: " in helped.output, args
    assert "--status" in runner.invoke(cli, ["export", "snapshot", "--help"]).output


def test_a_non_categorical_config_exports_its_consensus_submission(redis_conn, tmp_path):
    answers = {1: [["a", "b"], ["a", "b"], ["a", "b"]], 2: [["c"], ["c"], ["c"]]}
    record(redis_conn, [_event(task, person, choices, 3000 + 10 * task + person, label_config=MULTI_CONFIG)
                        for task, given in answers.items() for person, choices in enumerate(given, start=1)])
    folder, manifest = export_snapshot(redis_conn, PREFIX, PROJECT, tmp_path, now=NOW)
    assert manifest["label_config"]["categorical"] is False and manifest["metrics"]["gold_accuracy"] is None
    tasks = {t["id"]: t for t in json.loads((folder / "consensus.json").read_text())}
    assert sorted(tasks) == [1, 2]
    region = tasks[1]["predictions"][0]["result"][0]
    assert region["from_name"] == "tags" and region["value"] == {"choices": ["a", "b"]}
    labels = {int(r["task"]): json.loads(r["label"]) for r in _csv(folder)}
    assert labels[2][0]["value"] == {"choices": ["c"]}
