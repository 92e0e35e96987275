"""crowdgate's foundation, shared by every other package; imports nothing else of crowdgate.

- :mod:`core.labelstudio`: :class:`LabelStudioClient`, the one Label Studio adapter, and :class:`LabelStudioError`;
- :mod:`core.label_config`: :class:`LabelConfig`, the one label-config reader;
- :mod:`core.settings`: :class:`Settings`, the one settings object (:func:`use`, :func:`current`);
- :mod:`core.keys`: :class:`Keys`, the one owner of the Redis key layout;
- :mod:`core.task_lock`: :class:`TaskDataLock`, one writer of a task's ``data`` at a time.

The names are imported on first use, so ``import core.settings`` does not load Label Studio's SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LabelStudioClient": "core.labelstudio",
    "LabelStudioError": "core.labelstudio",
    "Control": "core.label_config",
    "LabelConfig": "core.label_config",
    "LabelConfigError": "core.label_config",
    "Settings": "core.settings",
    "SettingsError": "core.settings",
    "current": "core.settings",
    "use": "core.settings",
    "Keys": "core.keys",
    "TaskDataLock": "core.task_lock",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
