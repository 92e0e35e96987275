"""What a text model can pre-label in a label config, and the result regions it returns (built by the SDK)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.label_config import LabelConfig


@dataclass(frozen=True)
class ChoiceTarget:
    """A Choices control over text objects: its name, its options and the task fields it reads."""

    control: str
    labels: tuple[str, ...]
    data_keys: tuple[str, ...]
    multiple: bool


def choice_targets(label_config: str) -> list[ChoiceTarget]:
    """Choices controls whose objects are text-like, i.e. what a text model can pre-label."""
    return [
        ChoiceTarget(c.name, c.labels, c.text_keys, c.multiple)
        for c in LabelConfig.parse(label_config).controls
        if c.type == "choices" and c.labels and c.text_keys
    ]


def choice_region(label_config: str, control: str, labels: list[str]) -> dict[str, Any]:
    """A Label Studio result region for ``control`` choosing ``labels``, built by the SDK.

    Raises ``core.label_config.LabelConfigError`` when the config has no such control.
    """
    tag = LabelConfig.parse(label_config).control_tag(control)
    region = tag.label(labels if len(labels) > 1 else labels[0])
    return json.loads(region.to_json())


def task_text(task: dict[str, Any], keys: tuple[str, ...]) -> str:
    data = task.get("data") or {}
    parts = [data.get(key) for key in keys]
    return "\n".join(str(p) for p in parts if isinstance(p, str | int | float) and str(p).strip())
