"""The README's main command, small: the demo must run end to end and say OK."""

import pytest

import scripts.demo as demo

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)  # a private redis-server, never the machine's
    monkeypatch.setenv("CROWDGATE_DEMO_DIR", str(tmp_path))  # the demo reads its settings when it starts
    assert demo.main(["--exit", "--tasks", "6", "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "demo OK" in out and "login: admin@crowdgate.local" in out
    assert "Consensus matches the expert answer on" in out
