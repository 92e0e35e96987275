"""Run a real, headless Label Studio 1.23.2 next to crowdgate.

Label Studio pins its own ``openai``, ``redis`` and ``rq``, so it lives in a virtual environment of its own
(``$CROWDGATE_LS_VENV``, default ``~/.cache/crowdgate/label-studio-1.23.2``), installed on first use.
A migrated SQLite template database is built once (migrations take ~45 s) and copied for every start
(~4 s). With ``DJANGO_DB``/``POSTGRE_*`` set, Label Studio uses PostgreSQL and migrates it itself.

The same :class:`LabelStudioServer` serves the command line, the demo and the pytest session fixture::

    crowdgate labelstudio start            # prints URL, login and API token; Ctrl-C stops it
    crowdgate labelstudio install          # only install Label Studio and build the template

``crowdgate-labelstudio`` (:func:`main`) is its old name, kept for one release.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

from core.console_scripts import run_alias
from core.labelstudio import LabelStudioClient, LabelStudioError, RetryPolicy
from core.settings import Settings, current, use
from scripts import processes
from scripts.processes import free_port

LS_VERSION = "1.23.2"
_PORT_LINE = re.compile(r"Starting development server at http://[\d.]+:(\d+)/")
# Variables Label Studio would read as its own settings: keep them out of its environment.
_FOREIGN_VARS = ("HOST", "PORT", "USERNAME", "PASSWORD", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")


class LabelStudioServerError(RuntimeError):
    """The Label Studio server could not be installed, started or reached."""


def default_venv() -> Path:
    settings = current()
    return Path(settings.ls_venv) if settings.ls_venv else settings.cache_path / f"label-studio-{LS_VERSION}"


@contextlib.contextmanager
def _file_lock(path: Path):
    """Serialise installs and template builds between concurrent test sessions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_installed(venv: Path | None = None) -> Path:
    """Install Label Studio into its own venv if missing; return the ``label-studio`` executable."""
    venv = venv or default_venv()
    exe = venv / "bin" / "label-studio"
    with _file_lock(venv.with_suffix(".lock")):
        if exe.exists():
            return exe
        print(f"installing label-studio=={LS_VERSION} into {venv} (about a minute)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, f"label-studio=={LS_VERSION}"], check=True)
    if not exe.exists():
        raise LabelStudioServerError(f"installing label-studio left no {exe}")
    return exe


def _base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_VARS and not k.startswith("LABEL_STUDIO_")}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        SSRF_PROTECTION_ENABLED="false",  # webhooks and ML backends on 127.0.0.1 are refused otherwise
        ML_BLOCK_LOCAL_IP="false",
        LATEST_VERSION_CHECK="false",
        COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        SECRET_KEY=current().ls_secret_key,
    )
    return env


def _uses_postgres() -> bool:
    return current().ls_database.lower() in {"default", "postgresql"}


def ensure_template(exe: Path) -> Path:
    """A migrated, user-less SQLite data dir, built once and copied for each start."""
    template = exe.parent.parent.parent / f"label-studio-{LS_VERSION}-template"
    with _file_lock(template.with_suffix(".lock")):
        if (template / ".ready").exists():
            return template
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir(parents=True)
        print("building Label Studio's migrated template database (about 45 s, once)", file=sys.stderr)
        env = _base_env(template)
        env.pop("DJANGO_DB", None)
        result = subprocess.run(
            [str(exe), "init", "-q", "--data-dir", str(template)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise LabelStudioServerError(f"label-studio init failed:\n{result.stdout}\n{result.stderr}")
        (template / ".ready").touch()
    return template


@dataclass(frozen=True)
class RunningLabelStudio:
    """A running server: where it is and how to log in."""

    url: str
    token: str
    username: str
    password: str
    pid: int
    data_dir: Path
    log_path: Path

    def client(self) -> LabelStudioClient:
        """crowdgate's Label Studio adapter on this server, with the admin token."""
        return LabelStudioClient(self.url, self.token)


class LabelStudioServer:
    """Start and stop one headless Label Studio process (and its children) by PID."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        username: str = "admin@crowdgate.local",
        password: str | None = None,
        token: str | None = None,
        venv: Path | None = None,
    ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.username = username
        self.password = password or secrets.token_urlsafe(12)
        self.token = token or secrets.token_hex(20)  # legacy tokens are at most 40 characters
        if len(self.token) > 40:
            raise ValueError("Label Studio's legacy API token is at most 40 characters")
        self.venv = venv
        self._process: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.server: RunningLabelStudio | None = None

    def start(self, timeout: float = 180.0) -> RunningLabelStudio:
        exe = ensure_installed(self.venv)
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="crowdgate-ls-")
            self.data_dir = Path(self._tmp.name) / "data"
        if not _uses_postgres() and not (self.data_dir / "label_studio.sqlite3").exists():
            shutil.copytree(ensure_template(exe), self.data_dir, dirs_exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_port()
        env = _base_env(self.data_dir)
        env.update(
            LABEL_STUDIO_USERNAME=self.username,
            LABEL_STUDIO_PASSWORD=self.password,
            LABEL_STUDIO_USER_TOKEN=self.token,
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        )
        log_path = self.data_dir.parent / "label-studio.log"
        cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
        cmd += ["--data-dir", str(self.data_dir)]
        self._process = processes.spawn(cmd, log_path, env)
        try:
            url = self._wait_ready(log_path, timeout)
        except BaseException:
            self.stop()
            raise
        self.server = RunningLabelStudio(
            url=url,
            token=self.token,
            username=self.username,
            password=self.password,
            pid=self._process.pid,
            data_dir=self.data_dir,
            log_path=log_path,
        )
        return self.server

    def _wait_ready(self, log_path: Path, timeout: float) -> str:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise LabelStudioServerError(f"Label Studio exited with {code}:\n{processes.tail(log_path)}")
            if url is None:
                # A busy port makes Label Studio start silently on port+1: trust the log, not the request.
                match = _PORT_LINE.search(log_path.read_text(errors="replace"))
                if match:
                    url = f"http://127.0.0.1:{match.group(1)}"
            if url is not None:
                # No retries: this loop is the retry, and it watches the process between tries.
                probe = LabelStudioClient(url, self.token, timeout=5, retry=RetryPolicy(retries=0))
                with contextlib.suppress(LabelStudioError):
                    probe.whoami()
                    return url
            time.sleep(0.3)
        raise LabelStudioServerError(f"Label Studio did not answer within {timeout:.0f} s:\n{processes.tail(log_path)}")

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        processes.stop(process, timeout)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RunningLabelStudio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@click.group("labelstudio", context_settings={"help_option_names": ["-h", "--help"]})
def labelstudio() -> None:
    """Install or start a real, headless Label Studio 1.23.2 next to crowdgate.

    Label Studio lives in a virtual environment of its own ($CROWDGATE_LS_VENV, default
    ~/.cache/crowdgate/label-studio-1.23.2), installed on first use with a migrated SQLite template database
    (about a minute, once); each start copies the template (a few seconds). With DJANGO_DB/POSTGRE_* set it
    uses PostgreSQL instead.
    """
    use(Settings.from_env())


@labelstudio.command("install", short_help="Install Label Studio into its venv and build the template database.")
def install_command() -> None:
    """Install Label Studio into its own venv and build the migrated template database (skipped with
    PostgreSQL); prints the `label-studio` executable. Does nothing that is already done."""
    try:
        exe = ensure_installed()
        if not _uses_postgres():
            ensure_template(exe)
    except (LabelStudioServerError, subprocess.CalledProcessError) as exc:
        raise click.ClickException(f"{exc}; see the output above (CROWDGATE_LS_VENV picks where Label Studio "
                                   "is installed)") from exc
    click.echo(exe)


@labelstudio.command("start", short_help="Start a headless server and keep it running until Ctrl-C.")
@click.option("--port", type=int, default=None, help="Port (default: $CROWDGATE_LS_PORT, or 8080; a busy one: the "
              "next free, as Label Studio does).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Persistent data dir (default: a temporary one, removed at the end).")
@click.option("--username", default=None, help="The admin's login (default: $CROWDGATE_LS_USERNAME, or "
              "admin@crowdgate.local).")
@click.option("--password", default=None, help="The admin's password (default: $CROWDGATE_LS_PASSWORD, or a random "
              "one, printed).")
@click.option("--token", default=None, help="The admin's API token, at most 40 characters (default: "
              "$LABEL_STUDIO_API_KEY, or a random one, printed).")
def start_command(port: int | None, data_dir: Path | None, username: str | None, password: str | None,
                  token: str | None) -> None:
    """Start a headless Label Studio and keep it running until Ctrl-C (or SIGTERM).

    Prints its URL, the admin's login, and the LABEL_STUDIO_URL= and LABEL_STUDIO_API_KEY= lines crowdgate's
    services read.
    """
    settings = current()
    try:
        server = LabelStudioServer(
            port=(settings.ls_port or 8080) if port is None else port, data_dir=data_dir,
            username=settings.ls_username if username is None else username,
            password=(settings.ls_password or None) if password is None else password,
            token=(settings.label_studio_api_key or None) if token is None else token,
        )
    except ValueError as exc:  # a token Label Studio would refuse
        raise click.ClickException(f"{exc}: pass a shorter --token or LABEL_STUDIO_API_KEY") from exc
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with server as ls:
            click.echo(f"Label Studio {LS_VERSION} at {ls.url}")
            click.echo(f"login: {ls.username} / {ls.password}")
            click.echo(f"LABEL_STUDIO_URL={ls.url}")
            click.echo(f"LABEL_STUDIO_API_KEY={ls.token}")
            try:
                while server._process is not None and server._process.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    except LabelStudioServerError as exc:
        raise click.ClickException(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    """``crowdgate-labelstudio``: an alias of ``crowdgate labelstudio`` kept for one release; returns the exit
    code."""
    return run_alias(labelstudio, argv, alias="crowdgate-labelstudio", name="labelstudio")


if __name__ == "__main__":
    sys.exit(main())
