"""The one lock on a Label Studio task's ``data``, shared by every crowdgate writer of it.

Label Studio's PATCH of ``data`` replaces the whole object, so a writer reads the task, changes its field and
sends the rest back: two writers at once (the exam offers of routing, the difficulty written by training) would
erase each other's field. :class:`TaskDataLock` serialises them across processes with a Redis lock per task,
and :meth:`TaskDataLock.update` does the read-modify-write under it from the task's *current* data
(:meth:`TaskDataLock.update_many` for a batch: one listing for all of them instead of one read per task).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from core.keys import Keys
from core.labelstudio import LabelStudioError

__all__ = ["BatchUpdate", "TaskDataLock", "TaskDataStore"]

Change = Callable[[dict[str, Any]], dict[str, Any] | None]


class TaskDataStore(Protocol):
    """What the lock needs of the Label Studio adapter."""

    def tasks(self, project: int, ids: Any = None) -> list[dict[str, Any]]: ...

    def replace_task_data(self, task: int, data: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class BatchUpdate:
    """What :meth:`TaskDataLock.update_many` did with each task: ``written``, ``unchanged`` (its change gave the
    data it had), ``gone`` (not in Label Studio any more) or ``failed`` (task -> why: its lock was busy or lost,
    or Label Studio refused the write; nothing was written, so a later run can try again)."""

    written: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    errors: list[LabelStudioError] = field(default_factory=list)  # Label Studio's refusals, first first


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
               change: Change) -> bool:
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

    def update_many(self, client: TaskDataStore, project: int, changes: Mapping[int, Change]) -> BatchUpdate:
        """:meth:`update` for many tasks of ``project`` at once: their locks are taken (in id order, so two batches
        never wait on each other), their current data read in one listing, and each change written under its
        own lock, released as soon as that task is done. A task whose lock is busy past ``blocking_timeout`` or
        expired before its write (a slow Label Studio) is left for later, as is one whose write Label Studio
        refused; when Label Studio does not answer at all, the batch's remaining tasks are not tried. A failed
        listing raises :class:`LabelStudioError` with every lock released."""
        done = BatchUpdate()
        held: dict[int, Lock] = {}
        try:
            for task in sorted(changes):
                lock = self.hold(task)
                if lock.acquire():
                    held[task] = lock
                else:
                    done.failed[task] = "another writer holds the task's data lock"
            if not held:
                return done
            current = {int(t["id"]): t for t in client.tasks(project, ids=list(held))}
            down: LabelStudioError | None = None
            for task in list(held):
                try:
                    down = self._apply(client, task, current.get(task), changes[task], held[task], down, done)
                finally:
                    self._release(held.pop(task))
        finally:
            for lock in held.values():
                self._release(lock)
        return done

    @staticmethod
    def _apply(client: TaskDataStore, task: int, found: dict[str, Any] | None, change: Change, lock: Lock,
               down: LabelStudioError | None, done: BatchUpdate) -> LabelStudioError | None:
        """One task of :meth:`update_many`; the error that says Label Studio is not answering, if any."""
        if found is None:
            done.gone.append(task)
            return down
        if down is not None:
            done.failed[task] = f"not tried: {down}"
            return down
        data = dict(found.get("data") or {})
        new = change(dict(data))
        if new is None or new == data:
            done.unchanged.append(task)
            return down
        try:
            lock.reacquire()  # still ours, with its full timeout for the write
        except LockError:
            done.failed[task] = "the task's data lock expired before the write"
            return down
        try:
            client.replace_task_data(task, new)
        except LabelStudioError as exc:
            if exc.status == 404:  # deleted between the read and the write
                done.gone.append(task)
                return down
            done.failed[task] = str(exc)
            done.errors.append(exc)
            return exc if exc.status == 0 else down
        done.written.append(task)
        return down

    @staticmethod
    def _release(lock: Lock) -> None:
        with contextlib.suppress(LockError):  # released already, or expired: either way no longer ours
            lock.release()
