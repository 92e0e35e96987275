"""``crowdgate fraud`` (routing/fraud_cli.py) against a real Redis, through click's runner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from qa_hooks.jobs import process_event
from routing import pausing
from routing.fraud_cli import fraud
from tests.test_fraud_pausing import BOT, PROJECT, bind_default_policy, crowd_events

PREFIX = "fp"


@pytest.fixture
def env(redis_service, redis_conn, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_service.url)
    monkeypatch.setenv("CROWDGATE_KEY_PREFIX", PREFIX)
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    for event in crowd_events():
        process_event(event, PREFIX, redis_conn)
    bind_default_policy(redis_conn)
    return redis_conn


def run(*args: str):
    return CliRunner().invoke(fraud, [str(a) for a in args], catch_exceptions=False)


def test_evaluate_list_unpause_clear(env) -> None:
    out = run("evaluate", PROJECT, "--json")
    assert out.exit_code == 0 and json.loads(out.output)["paused"] == [BOT]  # Label Studio unset: no pre-labels
    listing = run("list", PROJECT)
    assert listing.exit_code == 0 and f"user {BOT}  paused" in listing.output and "too_fast:" in listing.output
    rows = [json.loads(line) for line in run("list", PROJECT, "--json").output.splitlines()]
    assert rows[0]["annotator"] == BOT and rows[0]["evidence"]["reasons"]
    done = run("unpause", PROJECT, BOT, "--reason", "a fast typist", "--by", "ann@x")
    assert done.exit_code == 0 and "unpaused" in done.output
    again = run("unpause", PROJECT, BOT, "--reason", "again")
    assert again.exit_code == 1 and "is not paused" in again.output
    assert pausing.status_of(env, PROJECT, BOT, PREFIX).by == "ann@x"
    assert "nobody is flagged" in run("list", PROJECT).output


def test_manual_pause_and_clear(env) -> None:
    out = run("pause", PROJECT, 4, "--reason", "copies from user 5")
    assert out.exit_code == 0 and "paused" in out.output and "routing job" in out.output
    assert run("pause", PROJECT, 4, "--reason", "x").exit_code == 1
    assert run("clear", PROJECT, 4, "--reason", "reviewed").exit_code == 0
    assert run("clear", PROJECT, 4, "--reason", "reviewed").exit_code == 1
    missing = run("pause", PROJECT, 4)
    assert missing.exit_code == 2 and "--reason" in missing.output


def test_a_hand_flag_cannot_change_under_a_pause(env, redis_service, capsys) -> None:
    from routing.cli import policy_main

    pausing.pause(env, PROJECT, 4, "copies", requeue_tasks=False, prefix=PREFIX)
    argv = ["--redis-url", redis_service.url, "--prefix", PREFIX]
    assert policy_main([*argv, "unflag", str(PROJECT), "4"]) == 1
    assert "paused for fraud review" in capsys.readouterr().err
    assert policy_main([*argv, "flag", str(PROJECT), "4", "--reason", "x"]) == 1
    assert policy_main([*argv, "flag", str(PROJECT), "5", "--reason", "by hand"]) == 0  # others as before
