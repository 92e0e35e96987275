"""The Label Studio harness itself: the port it really took, and PostgreSQL instead of SQLite."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid

import pytest

from scripts.labelstudio import LabelStudioServer
from scripts.processes import free_port
from tests.state_isolation import use_environ

pytestmark = pytest.mark.integration


def test_a_busy_port_is_read_from_the_log_not_assumed():
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        server = LabelStudioServer(port=port)
        try:
            ls = server.start()
            assert not ls.url.endswith(f":{port}")  # it moved, silently
            assert ls.client().request("GET", "/api/projects/", ok=(200,)) is not None
            pid = ls.pid
        finally:
            server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped by its PID


def _psql(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tA", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("psql") is None or _psql("-c", "select 1").returncode != 0
                    if shutil.which("psql") else True, reason="no PostgreSQL answers on 127.0.0.1:5432")
def test_postgresql_when_django_db_is_set(monkeypatch):
    database = f"crowdgate_test_{uuid.uuid4().hex[:8]}"
    assert _psql("-c", f"create database {database}").returncode == 0
    try:
        use_environ(monkeypatch, {"DJANGO_DB": "default", "POSTGRE_NAME": database, "POSTGRE_USER": "postgres",
                                  "POSTGRE_PASSWORD": "", "POSTGRE_HOST": "127.0.0.1", "POSTGRE_PORT": "5432"})
        with LabelStudioServer() as ls:
            ls.client().request("POST", "/api/projects/", ok=(201,), json={"title": "on postgres"})
        tables = _psql("-c", "select count(*) from project", database)
        assert tables.returncode == 0 and tables.stdout.strip() == "1"  # the project lives in PostgreSQL
    finally:
        _psql("-c", f"drop database if exists {database} with (force)")
