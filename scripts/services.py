"""Start crowdgate's processes on free loopback ports and stop them by PID (demo, tests, benchmarks).

Only what these functions started is ever stopped: a Redis found at ``REDIS_URL`` is reused, never
flushed or killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from core.settings import Settings
from scripts import processes
from scripts.processes import free_port

BIN = Path(sys.executable).parent


@dataclass
class Service:
    """A process this module started (or ``process=None`` for a service found already running)."""

    name: str
    url: str
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        processes.stop(process, timeout)
        for step in self.cleanup:
            step()
        self.cleanup.clear()

    def log_tail(self, lines: int = 30) -> str:
        return processes.tail(self.log_path, lines)


def _spawn(name: str, cmd: list[str], env: dict[str, str] | None, log_dir: Path) -> tuple[subprocess.Popen, Path]:
    log_path = log_dir / f"{name}.log"
    return processes.spawn(cmd, log_path, env), log_path


def _wait(check: Callable[[], bool], service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process is not None and service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"{service.name} did not come up within {timeout:.0f} s:\n{service.log_tail()}")


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    """``redis-server``, installing Debian's package when missing and running as root."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("redis-server is missing: installing Debian's redis-server package", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True)
        found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server is not installed: install Redis (e.g. apt-get install redis-server)")
    return found


def start_redis(log_dir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()) -> Service:
    """A private redis-server on a free port, keeping nothing on disk (``extra_args`` may override that)."""
    port = port or free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="crowdgate-redis-"))
    cmd = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(data_dir), *extra_args]
    process, log_path = _spawn("redis", cmd, None, log_dir)
    url = f"redis://127.0.0.1:{port}/0"
    service = Service("redis", url, process, log_path, [lambda: shutil.rmtree(data_dir, ignore_errors=True)])
    _wait(lambda: redis_answers(url), service, 15)
    return service


def ensure_redis(log_dir: Path, settings: Settings) -> Service:
    """Reuse the Redis at ``REDIS_URL`` when that was set and it answers, else start a private server."""
    if "redis_url" in settings.given and redis_answers(settings.redis_url):
        return Service("redis", settings.redis_url)
    return start_redis(log_dir)


def start_web(env: dict[str, str], log_dir: Path, port: int | None = None, workers: int = 2) -> Service:
    """crowdgate's WSGI app under gunicorn (ML backend + webhook receiver)."""
    port = port or free_port()
    env = {**env, "CROWDGATE_BIND": f"127.0.0.1:{port}", "CROWDGATE_WEB_WORKERS": str(workers)}
    process, log_path = _spawn("web", [str(BIN / "crowdgate-web")], env, log_dir)
    url = f"http://127.0.0.1:{port}"
    service = Service("web", url, process, log_path)
    # 401: up, with the ML backend's basic auth on
    _wait(lambda: requests.get(f"{url}/health", timeout=1).status_code in (200, 401), service, 60)
    return service


def start_worker(env: dict[str, str], log_dir: Path) -> Service:
    """An RQ worker (with RQ's scheduler) on crowdgate's queues."""
    process, log_path = _spawn("worker", [str(BIN / "crowdgate-worker")], env, log_dir)
    service = Service("worker", env.get("REDIS_URL", ""), process, log_path)
    connection = redis.Redis.from_url(env["REDIS_URL"])

    def registered() -> bool:
        from rq import Worker

        return any(w.pid == process.pid for w in Worker.all(connection=connection))

    _wait(registered, service, 60)
    return service
