"""Application factory of the ML backend on its own (``crowdgate.web`` mounts it beside the receiver)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from core.settings import Settings
from ml_backend.protocol import init_ml_backend


def create_app(settings: Settings | None = None, model: Any = None) -> Flask:
    app = Flask("ml_backend")
    init_ml_backend(app, settings or Settings.from_env(), model)
    return app
