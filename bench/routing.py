"""Routing's reads: events/s and Redis round trips per event of the worker's batch job, batched reads vs one by one.

Replays ``--events`` captured-shape ``ANNOTATION_CREATED`` webhooks (bench/soak.py's stream: 3 annotations per
task from 40 annotators) through :func:`crowdgate.pipeline.handle_events` in batches of ``--batch``, the job the
inbox drain runs, against a private redis-server with the default policy bound (so routing decides and enqueues
its actions). Each path starts from an empty database. The baseline, measured in the same run, is the per-task
read path (``routing.router._snapshot`` returning None, so every task reads its own state, as before
routing.snapshot; annotators and the call's prelude one at a time too); ``batched_reads`` batches the tasks'
reads only; ``batched_task_and_annotator_reads`` also the annotators' (``routing.snapshot.read_annotators``), the
prelude's (``touch_and_read_call``) and the annotators' audit entries. Round trips are counted at the
connection: one per packet sent (a pipeline is one). Prints one JSON line per path.

    python bench/routing.py [--events 2000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import routing.router
from bench.soak import PROJECT, Events
from crowdgate.pipeline import handle_events
from qa_hooks.events import parse_body
from routing.state import DEFAULT_POLICY_FILE, RoutingState
from scripts.services import start_redis

PREFIX = "bench"


class CountingConnection(redis.Connection):
    """A connection that counts what it sends: one packet is one round trip."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


# Each path: which of the router's batched reads it turns off (their one-at-a-time fallbacks run instead).
PATHS = {
    "baseline_per_task_reads": ("_snapshot", "_annotator_snapshot", "_call_reads"),
    "batched_reads": ("_annotator_snapshot", "_call_reads"),  # tasks batched (routing.snapshot.read_tasks)
    "batched_task_and_annotator_reads": (),  # + read_annotators, touch_and_read_call, pipelined audit entries
}
_OFF = {"_snapshot": lambda ctx, project, tasks: None,
        "_annotator_snapshot": lambda ctx, policy, project, annotators: {},
        "_call_reads": lambda ctx, project, annotators, now: None}


def run(url: str, events: list[dict[str, Any]], batch: int, path: str) -> dict[str, Any]:
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    connection = redis.Redis(connection_pool=pool)
    connection.flushdb()
    RoutingState(connection, PREFIX).set_policy(PROJECT, DEFAULT_POLICY_FILE.read_text(), "bench")
    real = {name: getattr(routing.router, name) for name in _OFF}
    for name in PATHS[path]:
        setattr(routing.router, name, _OFF[name])
    failed = 0
    try:
        CountingConnection.sent = 0
        start = time.perf_counter()
        for i in range(0, len(events), batch):
            failed += sum(isinstance(o, Exception) for o in handle_events(events[i:i + batch], PREFIX, connection))
        elapsed = time.perf_counter() - start
        trips = CountingConnection.sent
    finally:
        for name, func in real.items():
            setattr(routing.router, name, func)
    return {"bench": "routing", "path": path,
            "events": len(events), "batch": batch, "failed": failed, "seconds": round(elapsed, 3),
            "events_per_s": round(len(events) / elapsed, 1), "round_trips_per_event": round(trips / len(events), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    stream = Events()
    events = [parse_body(stream.body(i)).to_dict() for i in range(args.events)]
    service = start_redis(Path(tempfile.mkdtemp(prefix="crowdgate-bench-routing-")))
    try:
        for path in PATHS:
            print(json.dumps(run(service.url, events, args.batch, path)), flush=True)
    finally:
        service.stop()


if __name__ == "__main__":
    main()
