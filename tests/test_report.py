"""``crowdgate report``: the terminal table, the self-contained HTML report, CSV and JSON, on a private Redis."""

from __future__ import annotations

import csv
import json
import re

import pytest
from click.testing import CliRunner

from crowdgate.report.cli import report
from crowdgate.report.data import read_project
from tests.test_dashboard import PREFIX, PROJECT, seed


@pytest.fixture
def env(redis_service, redis_conn) -> dict[str, str]:
    seed(redis_conn)
    return {"REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX}


def test_report_table_html_csv_json(env, tmp_path, redis_conn):
    runner = CliRunner()
    html, folder = tmp_path / "out" / "report.html", tmp_path / "csv"
    result = runner.invoke(report, [str(PROJECT), "--html", str(html), "--csv", str(folder)], env=env)
    assert result.exit_code == 0, result.output
    assert "59 submissions, 1 skipped, 5 annotators, 12 tasks" in result.output
    assert re.search(r"│ 5\s+│", result.output)  # annotator 5's row of the table
    assert f"html: {html}" in result.output

    page = html.read_text(encoding="utf-8")
    assert len(re.findall(r'<tr class="annotator"', page)) == 5
    assert page.count("<svg") == 3 and "<circle" in page and 'class="bar"' in page
    # opens with no network: nothing to fetch, no script, and no admin buttons in a file
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page and "<form" not in page

    with (folder / "annotators.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["annotator"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r["skipped"]) for r in rows] == [0, 0, 0, 1, 0]
    assert {"gold_low", "reliability_high", "median_lead_time_s", "flags", "paused", "tier"} <= set(rows[0])
    with (folder / "tasks.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 12

    as_json = runner.invoke(report, [str(PROJECT), "--json"], env=env)
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    assert data["summary"]["submissions"] == 59 and len(data["annotators"]) == 5
    assert data == {**read_project(redis_conn, PREFIX, PROJECT).to_dict(), "generated_at": data["generated_at"]}


def test_unknown_project_and_redis_down_are_one_clear_line(env):
    from scripts.processes import free_port

    runner = CliRunner()
    missing = runner.invoke(report, ["77"], env=env)
    assert missing.exit_code == 1 and "no project 77" in missing.output and "Traceback" not in missing.output
    down = runner.invoke(report, ["2"], env={**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.exit_code == 1 and "not answering" in down.output


def test_the_crowdgate_group_runs_it(env):
    from crowdgate.cli import cli

    result = CliRunner().invoke(cli, ["report", str(PROJECT), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["annotators"] == 5
