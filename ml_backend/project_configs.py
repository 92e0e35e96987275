"""The label config each project last sent in ``/setup``, for a ``/predict`` that comes without one.

Label Studio sends ``/setup`` with the project's whole config before every predict batch, and anyone who can reach
the backend can send one for any project id: the store keeps the most recently used projects only, bounded both in
count and in total config size, so neither many projects nor multi-megabyte configs grow the process without end.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["ProjectConfig", "ProjectConfigs"]


@dataclass(frozen=True)
class ProjectConfig:
    label_config: str
    hostname: str | None = None

    @property
    def size(self) -> int:
        return len(self.label_config) + len(self.hostname or "")


class ProjectConfigs:
    """A least-recently-used map project id -> :class:`ProjectConfig`, at most ``max_projects`` entries and
    ``max_bytes`` characters of configs (a config larger than that on its own is not kept)."""

    def __init__(self, max_projects: int = 1024, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_projects = max_projects
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, ProjectConfig] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # gunicorn's threads share one store

    def put(self, project: int, label_config: str, hostname: str | None = None) -> None:
        entry = ProjectConfig(label_config, hostname)
        with self._lock:
            old = self._entries.pop(project, None)
            if old is not None:
                self._bytes -= old.size
            if entry.size > self.max_bytes:
                return
            self._entries[project] = entry
            self._bytes += entry.size
            while len(self._entries) > self.max_projects or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size

    def get(self, project: int | None) -> ProjectConfig | None:
        if project is None:
            return None
        with self._lock:
            entry = self._entries.get(project)
            if entry is not None:
                self._entries.move_to_end(project)
            return entry

    @property
    def size(self) -> int:
        """Characters of configs held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
