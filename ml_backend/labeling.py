"""What a label config asks for, read with label-studio-sdk's LabelInterface (parsed once per config)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from qa_hooks.similarity import load_interface


@dataclass(frozen=True)
class ChoiceTarget:
    """A Choices control over text objects: its name, its options and the task fields it reads."""

    control: str
    labels: tuple[str, ...]
    data_keys: tuple[str, ...]
    multiple: bool


def choice_targets(label_config: str) -> list[ChoiceTarget]:
    """Choices controls whose objects are text-like, i.e. what a text model can pre-label."""
    targets = []
    for control in load_interface(label_config).controls:
        if control.tag != "Choices" or not control.labels:
            continue
        keys = tuple(
            obj.value.lstrip("$")
            for obj in control.objects
            if obj.tag in {"Text", "HyperText", "Paragraphs"} and obj.value.startswith("$")
        )
        if keys:
            targets.append(ChoiceTarget(control.name, tuple(control.labels), keys, control.is_multiple_choice))
    return targets


def choice_region(label_config: str, control: str, labels: list[str]) -> dict[str, Any]:
    """A Label Studio result region for ``control`` choosing ``labels``, built by the SDK."""
    region = load_interface(label_config).get_control(control).label(labels if len(labels) > 1 else labels[0])
    return json.loads(region.to_json())


def task_text(task: dict[str, Any], keys: tuple[str, ...]) -> str:
    data = task.get("data") or {}
    parts = [data.get(key) for key in keys]
    return "\n".join(str(p) for p in parts if isinstance(p, str | int | float) and str(p).strip())
