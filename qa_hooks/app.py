"""Application factory of the webhook receiver on its own (``crowdgate.web`` mounts it beside the ML backend)."""

from __future__ import annotations

from flask import Flask

from core.settings import Settings
from qa_hooks.receiver import init_hooks


def create_app(settings: Settings | None = None) -> Flask:
    app = Flask("qa_hooks")
    init_hooks(app, settings or Settings.from_env())
    return app
