"""Shared fixtures: a private redis-server and, for integration tests, a real Label Studio.

Everything here is started on free loopback ports and stopped by its PID; the machine's own Redis is
never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from scripts.labelstudio import LabelStudioServer
from scripts.services import start_redis, start_web, start_worker
from tests.state_isolation import pytest_configure, pytest_sessionfinish  # noqa: F401 - keeps .crowdgate/ untouched

FIXTURES = Path(__file__).parent / "fixtures" / "labelstudio-1.23.2"


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def redis_service(log_dir: Path):
    service = start_redis(log_dir)
    yield service
    service.stop()


@pytest.fixture
def redis_conn(redis_service) -> redis.Redis:
    connection = redis.Redis.from_url(redis_service.url)
    connection.flushdb()  # our private server: a clean slate per test
    return connection


@contextlib.contextmanager
def crowdgate_stack(redis_service, log_dir: Path, labelstudio, prefix: str, secret: str):
    """crowdgate's web app under gunicorn and an RQ worker process, wired to a private Redis and Label Studio;
    yields (web, worker, redis connection) and stops both by PID."""
    env = {**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_WEBHOOK_SECRET": secret,
           "CROWDGATE_KEY_PREFIX": prefix, "LABEL_STUDIO_URL": labelstudio.url,
           "LABEL_STUDIO_API_KEY": labelstudio.token}
    web = start_web(env, log_dir)
    try:
        worker = start_worker(env, log_dir)
        try:
            yield web, worker, redis.Redis.from_url(redis_service.url)
        finally:
            worker.stop()
    finally:
        web.stop()


@pytest.fixture(scope="session")
def labelstudio():
    with LabelStudioServer() as server:
        yield server
