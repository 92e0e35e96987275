"""One WSGI application serving the ML backend and the webhook receiver, and its gunicorn launcher.

    crowdgate-web            # gunicorn on $CROWDGATE_BIND (default 127.0.0.1:9090)
"""

from __future__ import annotations

import os
import sys

from flask import Flask

from core.settings import Settings, use
from crowdgate.pipeline import handle_event
from ml_backend.protocol import init_ml_backend
from qa_hooks.receiver import init_hooks


def create_app(settings: Settings | None = None) -> Flask:
    """The application factory; ``settings`` default to the environment's, read once per process."""
    settings = use(settings or Settings.from_env())
    app = Flask("crowdgate")
    init_ml_backend(app, settings)
    init_hooks(app, settings, job=handle_event)  # each event is scored, then routed
    return app


def main() -> None:
    settings = Settings.from_env()
    args = [sys.executable, "-m", "gunicorn", "--bind", settings.bind, "--workers", str(settings.web_workers),
            "--threads", str(settings.web_threads), "--worker-class", "gthread"]
    # gunicorn's default access format logs the basic-auth user name (%(u)s): the ML backend's credential.
    access_format = '%(h)s %(l)s - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    args += ["--timeout", "120", "--access-logfile", "-", "--access-logformat", access_format, *sys.argv[1:],
             "crowdgate.web:create_app()"]
    os.execv(args[0], args)
