"""Seed a Label Studio project and connect crowdgate to it (used by the demo and the integration tests).

:class:`Seeder` is the Label Studio adapter (:class:`core.labelstudio.LabelStudioClient`) with the seeding steps
on top. Facts about Label Studio 1.23.2 Community this relies on: ``POST /api/users/`` makes a user without a
login who is not in the organisation until ``active_organization`` is PATCHed; an admin token may create
annotations on behalf of any user with ``completed_by``; registering an ML backend makes Label Studio add a
project webhook to ``<backend>/webhook`` by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config_folder import ConfigFolder
from core.labelstudio import LabelStudioClient
from routing.policy import parse_policy

LABEL_CONFIGS = Path(__file__).resolve().parents[1] / "label_configs"
SECRET_HEADER = "X-Crowdgate-Secret"


def label_config(name: str) -> str:
    """The XML of the config folder ``label_configs/<name>/`` (its ``config.xml``)."""
    return (LABEL_CONFIGS / name / "config.xml").read_text()


def config_folder(name: str | Path) -> ConfigFolder:
    """The config folder ``label_configs/<name>/`` (or the folder at a path), read and checked, its policy by
    crowdgate's policy parser; :class:`core.config_folder.ConfigFolderError` names the file and line of a problem."""
    path = Path(name)
    return ConfigFolder.load(path if path.is_dir() or len(path.parts) > 1 else LABEL_CONFIGS / path,
                             check_policy=parse_policy)


@dataclass
class Seeder(LabelStudioClient):
    """An admin session on one Label Studio server, with the steps that seed a project."""

    timeout: float = 60.0

    def connect_webhook(self, project: int, url: str, secret: str) -> int:
        """Send every project event, with its payload, to crowdgate's receiver, authenticated by the secret."""
        return self.create_webhook(project, url, {SECRET_HEADER: secret})

    def create_users(self, emails: Iterable[str]) -> dict[str, int]:
        """Annotator accounts by e-mail (existing ones are reused); returns e-mail -> user id."""
        existing = {u["email"]: int(u["id"]) for u in self.users()}
        organization = int(self.whoami()["active_organization"])
        ids = {}
        for email in emails:
            if email not in existing:
                existing[email] = self.create_user(email, organization=organization)
            ids[email] = existing[email]
        return ids

    def annotate(
        self,
        task: int,
        user: int,
        result: list[dict[str, Any]],
        *,
        lead_time: float | None = None,
        was_cancelled: bool = False,
        ground_truth: bool = False,
    ) -> int:
        """Create an annotation on behalf of ``user`` (fires ANNOTATION_CREATED); returns its id."""
        extra: dict[str, Any] = {"was_cancelled": was_cancelled, "ground_truth": ground_truth}
        if lead_time is not None:
            extra["lead_time"] = lead_time
        return int(self.create_annotation(task, result, completed_by=user, **extra)["id"])
