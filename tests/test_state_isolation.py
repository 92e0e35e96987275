"""The tests keep off the checkout's own ``.crowdgate/``: a demo's artifacts must not meet a test's projects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.settings import Settings
from ml_backend import artifacts
from tests.state_isolation import CHECKOUT, STATE_DIRS


def outside_checkout(path: Path) -> bool:
    return not path.resolve().is_relative_to(CHECKOUT)


def test_every_state_folder_points_outside_the_checkout() -> None:
    for name in STATE_DIRS:
        assert name in os.environ and outside_checkout(Path(os.environ[name])), name
    assert outside_checkout(artifacts.model_dir())
    assert outside_checkout(Path(Settings.from_env().demo_dir))  # what the demo reads when it starts


def test_started_processes_inherit_the_state_folders() -> None:
    # Services are started with the test process's environment (plus their own settings), as this child is.
    code = "from ml_backend import artifacts; print(artifacts.model_dir().resolve())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=CHECKOUT,
                         env={**os.environ, "PYTHONPATH": str(CHECKOUT)})
    assert outside_checkout(Path(out.stdout.strip()))
