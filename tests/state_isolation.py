"""Keeps a test run away from the checkout's own ``.crowdgate/`` (the demo's models and Label Studio data).

``pytest_configure`` points every state directory crowdgate reads from the environment into a temporary
folder before any test module is imported (``scripts.demo`` reads its folder at import) and before any service
is started, so every subprocess inherits it. ``pytest_sessionfinish`` fails the run if ``.crowdgate/`` changed
anyway: a model trained by the demo for its project 1 must never be read, or overwritten, by a test's project 1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings, current

CHECKOUT = Path(__file__).resolve().parents[1]
CHECKOUT_STATE = CHECKOUT / ".crowdgate"
# Every variable naming a folder crowdgate writes state to, and its sub-folder in the run's temporary folder.
STATE_DIRS = {"CROWDGATE_MODEL_DIR": "models", "CROWDGATE_DEMO_DIR": "demo"}

_run_dir: Path | None = None
_before: dict[str, tuple[int, int]] = {}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime in ns, size) of every file and folder under ``root``."""
    if not root.exists():
        return {}
    found = {}
    for path in [root, *root.rglob("*")]:
        try:
            stat = path.lstat()
        except FileNotFoundError:
            continue
        found[str(path.relative_to(root))] = (stat.st_mtime_ns, stat.st_size)
    return found


def pytest_configure(config: pytest.Config) -> None:
    global _run_dir, _before
    _run_dir = Path(tempfile.mkdtemp(prefix="crowdgate-test-state-"))
    for name, folder in STATE_DIRS.items():
        os.environ[name] = str(_run_dir / folder)
    _before = snapshot(CHECKOUT_STATE)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    changed = sorted(set(snapshot(CHECKOUT_STATE).items()) ^ set(_before.items()))
    if changed:
        names = sorted({name for name, _ in changed})
        print(f"\nthe test run changed the checkout's {CHECKOUT_STATE}: {', '.join(names[:10])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _run_dir is not None:
        shutil.rmtree(_run_dir, ignore_errors=True)


def isolated_settings(**changes: Any) -> Settings:
    """crowdgate's settings for a test: the environment as :func:`pytest_configure` left it (state folders in
    the run's temporary folder), with ``changes``; ``redis_url=""`` means no Redis."""
    return Settings.from_env().with_(**changes)


def use_settings(monkeypatch: pytest.MonkeyPatch, **changes: Any) -> Settings:
    """Make this process's settings (:func:`core.settings.current`, what RQ jobs run in the test read) carry
    ``changes`` for one test; the monkeypatch restores them."""
    import core.settings

    settings = current().with_(**changes)
    monkeypatch.setattr(core.settings, "_current", settings)
    return settings


def use_environ(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Set ``env`` in this process's environment (for the services a test starts) and make the settings read from
    it this process's own (for the RQ jobs the test runs in-process); the monkeypatch restores both."""
    import core.settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    monkeypatch.setattr(core.settings, "_current", settings)
    return settings
