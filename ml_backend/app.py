"""Application factory of the ML backend on its own (``crowdgate.web`` mounts it beside the receiver)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from ml_backend.config import MLSettings
from ml_backend.protocol import init_ml_backend


def create_app(settings: MLSettings | None = None, model: Any = None) -> Flask:
    app = Flask("ml_backend")
    init_ml_backend(app, settings, model)
    return app
