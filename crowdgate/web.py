"""One WSGI application serving the ML backend and the webhook receiver, and its gunicorn launcher.

    crowdgate-web            # gunicorn on $CROWDGATE_BIND (default 127.0.0.1:9090)
"""

from __future__ import annotations

import os
import sys

from flask import Flask

from crowdgate.pipeline import handle_event
from ml_backend.protocol import init_ml_backend
from qa_hooks.receiver import init_hooks


def create_app() -> Flask:
    app = Flask("crowdgate")
    init_ml_backend(app)
    init_hooks(app, job=handle_event)  # each event is scored, then routed
    return app


def main() -> None:
    bind = os.environ.get("CROWDGATE_BIND", "127.0.0.1:9090")
    workers = os.environ.get("CROWDGATE_WEB_WORKERS", "2")
    threads = os.environ.get("CROWDGATE_WEB_THREADS", "8")
    args = [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", workers, "--threads", threads]
    args += ["--worker-class", "gthread"]
    args += ["--timeout", "120", "--access-logfile", "-", *sys.argv[1:], "crowdgate.web:create_app()"]
    os.execv(args[0], args)
