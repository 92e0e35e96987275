"""The one ``crowdgate`` command: help at every level, lazy subcommands, the old console scripts as aliases,
exit codes that mean something, and a clear line (URL and setting) when Redis or Label Studio is down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import crowdgate.cli
from crowdgate.cli import LAZY_COMMANDS, cli, main

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
GOOD_POLICY = ROOT / "label_configs" / "default.policy.yaml"
NATIVE = ("web", "worker", "cron", "rebuild-state", "reconcile")
# The subcommands that were argparse console scripts, and those scripts, now aliases of them for one release.
ALIASES = {"crowdgate-policy": "policy", "crowdgate-audit": "audit", "crowdgate-replay": "replay",
           "crowdgate-demo": "demo", "crowdgate-labelstudio": "labelstudio"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, env: dict[str, str] | None = None, exe: str = "crowdgate") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / exe), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def test_top_level_help_lists_every_command_without_importing_them():
    result = run("--help")
    assert result.returncode == 0
    for name in (*NATIVE, *ALIASES.values(), "seed"):
        assert f"\n  {name} " in result.stdout, name
    assert "crowdgate seed label_configs/<type>" in result.stdout  # the admin's first step
    probe = ("import sys; from crowdgate.cli import main; code = main(['--help']); "
             "print(code, sorted(m for m in ('redis', 'label_studio_sdk', 'crowdgate.seed', 'sklearn', 'flask') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr


def test_a_lazy_command_is_listed_only_when_its_module_exists(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(LAZY_COMMANDS, "ghost", ("crowdgate.no_such_module:ghost", "not written yet"))
    monkeypatch.setitem(LAZY_COMMANDS, "ghost2", ("no_such_package.cli:ghost", "nor this"))
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "ghost" not in result.output and "seed" in result.output
    assert CliRunner().invoke(cli, ["ghost"]).exit_code == 2  # unknown, as any unknown command
    for name, (spec, _) in LAZY_COMMANDS.items():
        assert crowdgate.cli._available(spec) == (ROOT / (spec.split(":")[0].replace(".", "/") + ".py")).is_file()
        if name not in ("ghost", "ghost2") and crowdgate.cli._available(spec):
            assert f"\n  {name} " in result.output


@pytest.mark.parametrize("args", [
    *[[name, "--help"] for name in NATIVE], ["seed", "--help"],
    *[[name, "--help"] for name in ALIASES.values() if name != "labelstudio"],
    ["labelstudio", "--help"], ["labelstudio", "start", "--help"], ["policy", "set", "--help"],
    ["policy", "tier", "--help"], ["policy", "flag", "--help"],
])
def test_help_at_every_level_explains(args: list[str]):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    text = result.output
    assert len(text.split()) > 12 and ("Usage" in text or "usage" in text)


@pytest.mark.parametrize("name", sorted(n for n, (spec, _) in LAZY_COMMANDS.items() if crowdgate.cli._available(spec)))
def test_each_lazy_command_that_exists_loads_and_explains(name: str):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and len(result.output.split()) > 12


def test_seed_help_names_its_inputs_and_options():
    text = CliRunner().invoke(cli, ["seed", "--help"]).output
    for word in ("FOLDER", "TASKS", "--annotators", "--project-title", "--drop-duplicates", "--merge-duplicates",
                 "--json", "email,name,tier,cohort"):
        assert word in text, word


def alias_note(exe: str) -> str:
    name = ALIASES[exe]
    return f"note: `{exe}` is an alias of `crowdgate {name}`, kept for one release; use `crowdgate {name}`."


def test_old_console_scripts_still_work_as_aliases(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: 3\n")
    for args, code in ((["check", str(GOOD_POLICY)], 0), (["check", str(bad)], 1)):
        old, new = run(*args, exe="crowdgate-policy"), run("policy", *args)
        assert (old.returncode, new.returncode) == (code, code)
        # the same output; the alias says on stderr, first, what it is an alias of
        assert old.stdout == new.stdout and old.stderr == f"{alias_note('crowdgate-policy')}\n{new.stderr}"
    assert "tiers" in new.stderr  # the policy's error, not a traceback
    # each old script runs its subcommand's very click command: the same help, under the old name
    for exe, name in ALIASES.items():
        old, new = run("--help", exe=exe), CliRunner().invoke(cli, [name, "--help"], prog_name="crowdgate")
        assert old.returncode == new.exit_code == 0, exe + old.stderr
        assert old.stdout.startswith(f"Usage: {exe} ") and new.output.startswith(f"Usage: crowdgate {name} ")
        words = old.stdout.replace(exe, f"crowdgate {name}").split()  # wrapped to each side's terminal width
        assert words == new.output.split(), exe
        assert old.stderr.splitlines() == [alias_note(exe)], exe
    # these import torch or pandas, or start services: their scripts are there, their code is `crowdgate NAME`'s
    for exe in ("crowdgate-web", "crowdgate-worker", "crowdgate-cron"):
        assert (BIN / exe).is_file(), exe


def test_aliases_in_process_return_codes_and_exit_2_on_usage_errors(capsys: pytest.CaptureFixture[str]):
    """Callers (tests, scripts) call the old mains in-process: codes come back; a usage error exits 2, as
    argparse did."""
    from routing.cli import audit_main, policy_main
    from scripts import demo, labelstudio, replay

    assert policy_main(["check", str(GOOD_POLICY)]) == 0
    assert "valid (qualification" in capsys.readouterr().out
    assert policy_main(["check", str(ROOT / "no-such.policy.yaml")]) == 1
    assert "No such file" in capsys.readouterr().err
    unreachable = ["--redis-url", f"redis://127.0.0.1:{free_port()}/0"]
    assert policy_main([*unreachable, "show", "3"]) == 1 and audit_main(unreachable) == 1
    err = capsys.readouterr().err
    assert "cannot reach Redis" in err and "--redis-url or REDIS_URL" in err and "Traceback" not in err
    assert replay.main(["no-such-set", *unreachable]) == 1
    assert "crowd set 'no-such-set' not found" in capsys.readouterr().err
    for entry, argv in ((policy_main, ["frobnicate"]), (policy_main, ["tier", "1", "2"]),
                        (policy_main, ["flag", "1", "2"]), (audit_main, ["--task", "3"]),
                        (audit_main, ["--since", "yesterday"]), (audit_main, ["--kind", "nope"]),
                        (replay.main, []), (replay.main, ["rte", "--seed", "x"]), (demo.main, ["--tasks", "many"]),
                        (labelstudio.main, ["start", "--port", "x"]), (labelstudio.main, ["nope"])):
        with pytest.raises(SystemExit) as stopped:
            entry(argv)
        assert stopped.value.code == 2, argv
        err = capsys.readouterr().err
        assert "Usage: crowdgate-" in err and "Error: " in err, argv


def walk(group: click.Group, path: list[str]) -> list[list[str]]:
    """Every command path under ``group`` (``group`` itself included), at every level."""
    ctx = click.Context(group, info_name=path[-1] if path else "crowdgate")
    found = [path]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        found += walk(command, [*path, name]) if isinstance(command, click.Group) else [[*path, name]]
    return found


def test_help_of_every_command_at_every_level_is_clicks_and_explains():
    paths = walk(cli, [])
    for name in ALIASES.values():
        assert [name] in paths
    for sub in ("check", "set", "show", "unset", "tier", "tiers", "flag", "unflag"):
        assert ["policy", sub] in paths
    assert ["labelstudio", "start"] in paths and ["labelstudio", "install"] in paths
    for path in paths:
        result = CliRunner().invoke(cli, [*path, "--help"], prog_name="crowdgate")
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        assert text.startswith("Usage: " + " ".join(["crowdgate", *path])), path  # click's, not argparse's
        assert "-h, --help" in text and "Show this message and exit." in text, path
        explained = text.split("\n\n")[1]  # the paragraph after the usage line: the command's own help
        assert not explained.lstrip().startswith("Options:") and len(explained.split()) >= 3, (path, text)


@pytest.mark.parametrize(("path", "names"), [
    (["policy"], ["--redis-url", "--prefix"]),
    (["policy", "set"], ["PROJECT", "FILE"]),
    (["policy", "check"], ["FILE"]),
    (["policy", "tier"], ["PROJECT", "USER", "TIER", "--reason", "set by hand"]),
    (["policy", "flag"], ["PROJECT", "USER", "--reason", "required"]),
    (["policy", "unflag"], ["PROJECT", "USER", "--reason", "unflagged by hand"]),
    (["audit"], ["--redis-url", "--prefix", "--project", "--task", "--annotator", "--kind", "--action", "--since",
                 "--until", "--format", "--output", "jsonl", "csv", "needs --project"]),
    (["replay"], ["DATASET", "--gold-fraction", "--seed", "--limit", "--redis-url", "--top", "CROWDGATE_CROWD_DATA"]),
    (["demo"], ["--tasks", "--annotators", "--show", "--gold-every", "--ls-port", "--keep-data", "--exit"]),
    (["labelstudio", "start"], ["--port", "--data-dir", "--username", "--password", "--token", "8080"]),
])
def test_every_former_argparse_option_is_kept(path: list[str], names: list[str]):
    text = " ".join(CliRunner().invoke(cli, [*path, "--help"]).output.split())
    for name in names:
        assert name in text, (path, name)


def test_replay_shows_a_progress_bar_on_stderr_and_its_json_on_stdout(redis_service):
    result = CliRunner().invoke(cli, ["replay", "rte", "--limit", "40", "--top", "1", "--redis-url", redis_service.url])
    assert result.exit_code == 0, result.output
    assert "replaying rte" in result.stderr and "40/40" in result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["dataset"] == "rte" and summary["submissions"] == 40
    assert "replaying" not in result.stdout


def test_exit_codes():
    assert run("no-such-command").returncode == 2
    assert main(["rebuild-state"]) == 2  # PROJECT missing
    assert main(["rebuild-state", "not-a-number"]) == 2
    assert main(["seed", "--no-such-option", "a", "b"]) == 2
    assert main(["policy", "frobnicate"]) == 2
    assert main(["policy", "tier", "1", "2"]) == 2  # TIER missing
    assert main(["audit", "--task", "3"]) == 2  # --task needs --project
    assert main(["replay"]) == 2 and main(["demo", "--no-such-option"]) == 2
    assert main(["labelstudio"]) == 2 and main(["labelstudio", "start", "--port", "x"]) == 2
    assert main(["--help"]) == 0
    assert main(["policy", "check", str(GOOD_POLICY)]) == 0


def test_redis_down_is_one_line_naming_the_url_and_the_setting():
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    for args in (["reconcile"], ["rebuild-state", "3"]):
        result = run(*args, env={"REDIS_URL": url, "LABEL_STUDIO_URL": "http://127.0.0.1:9",
                                 "LABEL_STUDIO_API_KEY": "x"})
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "cannot reach Redis at redis://:***@127.0.0.1" in result.stderr and "REDIS_URL" in result.stderr
        assert "hunter2" not in result.stderr


def test_labelstudio_down_is_one_line_naming_the_url_and_the_settings(redis_service, tmp_path: Path):
    ls_url = f"http://127.0.0.1:{free_port()}"
    env = {"REDIS_URL": redis_service.url, "LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": "x" * 40,
           "CROWDGATE_KEY_PREFIX": "clitest"}
    result = run("rebuild-state", "3", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot reach Label Studio at {ls_url}" in result.stderr
    assert "LABEL_STUDIO_URL" in result.stderr and "LABEL_STUDIO_API_KEY" in result.stderr

    folder = ROOT / "label_configs" / "rte"
    seeding = run("seed", str(folder), str(folder / "tasks.jsonl"), env=env)
    assert seeding.returncode == 1 and "Traceback" not in seeding.stderr
    assert f"cannot reach Label Studio at {ls_url}" in seeding.stderr

    missing = run("rebuild-state", "3", env={**env, "LABEL_STUDIO_URL": ""})
    assert missing.returncode == 1 and "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set" in missing.stderr
