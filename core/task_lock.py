"""The one lock on a Label Studio task's ``data``, shared by every crowdgate writer of it.

Label Studio's PATCH of ``data`` replaces the whole object, so a writer reads the task, changes its field and
sends the rest back: two writers at once (the exam offers of routing, the difficulty written by training) would
erase each other's field. :class:`TaskDataLock` serialises them across processes with a Redis lock per task,
and :meth:`TaskDataLock.update` does the read-modify-write under it from the task's *current* data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import redis
from redis.lock import Lock

from core.keys import Keys
from core.labelstudio import LabelStudioError

__all__ = ["TaskDataLock", "TaskDataStore"]


class TaskDataStore(Protocol):
    """What the lock needs of the Label Studio adapter."""

    def tasks(self, project: int, ids: Any = None) -> list[dict[str, Any]]: ...

    def replace_task_data(self, task: int, data: dict[str, Any]) -> dict[str, Any]: ...


class TaskDataLock:
    """Writers of one task's ``data`` take turns; the lock expires after ``timeout`` s should a holder die."""

    def __init__(self, connection: redis.Redis, prefix: str = "cg", timeout: float = 60,
                 blocking_timeout: float = 30) -> None:
        self.connection, self.prefix = connection, prefix
        self.timeout, self.blocking_timeout = timeout, blocking_timeout

    def key(self, task: int) -> str:
        return Keys(self.prefix).task_data_lock(task)

    def hold(self, task: int) -> Lock:
        """A context manager holding ``task``'s lock (``redis.exceptions.LockError`` when it cannot be had)."""
        return self.connection.lock(self.key(task), timeout=self.timeout, blocking_timeout=self.blocking_timeout)

    def update(self, client: TaskDataStore, project: int, task: int,
               change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> bool:
        """Under the lock, read ``task``'s current data, apply ``change`` (a new complete ``data``, or None for
        no change) and write it back; True when it wrote. A task gone from Label Studio is left alone.

        The task is read through the list API: fetching one task can make Label Studio call the ML backend."""
        with self.hold(task):
            found = client.tasks(project, ids=[task])
            if not found:
                return False
            data = dict(found[0].get("data") or {})
            new = change(dict(data))
            if new is None or new == data:
                return False
            try:
                client.replace_task_data(task, new)
            except LabelStudioError as exc:
                if exc.status == 404:  # deleted between the read and the write
                    return False
                raise
            return True
