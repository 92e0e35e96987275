"""One WSGI application serving the ML backend and the webhook receiver, and its gunicorn launcher.

    crowdgate-web            # gunicorn on $CROWDGATE_BIND (default 127.0.0.1:9090)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flask import Flask

from core.settings import Settings, use
from crowdgate.alerts import report_llm_outages
from crowdgate.dashboard.views import init_dashboard
from crowdgate.metrics import init_metrics
from crowdgate.pipeline import handle_event
from ml_backend.protocol import init_ml_backend
from qa_hooks.receiver import init_hooks


def create_app(settings: Settings | None = None) -> Flask:
    """The application factory; ``settings`` default to the environment's, read once per process."""
    settings = use(settings or Settings.from_env())
    app = Flask("crowdgate")
    init_ml_backend(app, settings)
    init_hooks(app, settings, job=handle_event)  # each event is scored, then routed
    init_dashboard(app, settings)  # /dashboard/ and /admin/api/, behind CROWDGATE_ADMIN_TOKEN
    init_metrics(app, settings)  # /metrics
    report_llm_outages(settings)  # an LLM outage becomes an audit alert (when alerts are on)
    return app


def main(argv: list[str] | None = None) -> None:
    """gunicorn with crowdgate's app; ``argv`` (default: the command line's) go to gunicorn."""
    settings = Settings.from_env()
    if settings.prometheus_multiproc_dir:  # counts of processes gone before this start would be added up too
        folder = Path(settings.prometheus_multiproc_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # prometheus_client's files only
            stale.unlink(missing_ok=True)
    args = [sys.executable, "-m", "gunicorn", "--bind", settings.bind, "--workers", str(settings.web_workers),
            "--threads", str(settings.web_threads), "--worker-class", "gthread"]
    # gunicorn's default access format logs the basic-auth user name (%(u)s): the ML backend's credential.
    access_format = '%(h)s %(l)s - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    args += ["--timeout", "120", "--access-logfile", "-", "--access-logformat", access_format,
             *(sys.argv[1:] if argv is None else argv),
             "crowdgate.web:create_app()"]
    os.execv(args[0], args)
