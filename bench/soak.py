"""Soak and scale: sustained submissions through the real receiver, Redis and crowdgate-worker processes.

1. Soak: ``--rate`` submissions/s (default 200) for ``--seconds`` (default 300) through the receiver
   (``scripts.services.start_web``, gunicorn) with two ``crowdgate-worker`` processes on a private redis-server:
   scored count against sent, queue depth (inbox stream + RQ event queue) sampled every second, and the resident
   memory of every process (web master and workers, each worker and its scheduler) after the first minute
   (a third of the run when it is shorter) against that point.
2. Scale: a backlog of ``--backlog`` events is queued through the receiver with no worker running, then drained
   as fast as possible by 1 and by 2 worker processes (stream inbox, the default), and, as the baseline in the
   same run, by 1 worker on the old path (``CROWDGATE_INBOX=rq``: one RQ job per event). The rate counts from the
   moment a worker first took an event to the last one scored, so worker start-up is left out for every path.

Events are captured-shape ``ANNOTATION_CREATED`` webhooks of one project: each task gets 3 annotations from
different annotators (of 40), spread over a window of 300 events, as a crowd working through a queue does.
Prints one JSON line.

    python bench/soak.py [--seconds 300] [--rate 200] [--backlog 4000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from rq import Queue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.keys import Keys
from core.settings import Settings
from qa_hooks.inbox import InboxDrain
from scripts.services import Service, start_redis, start_web, start_worker

FIXTURE = Path(__file__).resolve().parents[1] / "tests/fixtures/labelstudio-1.23.2/webhook_annotation_created.json"
SECRET, PREFIX, QUEUE, PROJECT = "soak-secret", "soak", "crowdgate-events", 2
WINDOW, OVERLAP, ANNOTATORS = 100, 3, 40
LABELS = ("Positive", "Negative", "Neutral")


class Events:
    """The i-th submission of the stream: task, annotator and label as described in the module doc."""

    def __init__(self, seed: int = 7) -> None:
        self.template = json.loads(FIXTURE.read_text())
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def body(self, i: int) -> bytes:
        block, slot = divmod(i, WINDOW * OVERLAP)
        round_, offset = divmod(slot, WINDOW)
        task = 1 + block * WINDOW + offset
        annotator = 1 + (offset + 13 * round_) % ANNOTATORS  # the 3 annotators of a task differ
        truth = LABELS[task % 3]
        with self.lock:
            label = truth if self.rng.random() < 0.8 else self.rng.choice(LABELS)
        event = json.loads(json.dumps(self.template))
        event["annotation"].update(id=10_000 + i, unique_id=str(uuid.uuid4()), task=task, completed_by=annotator,
                                   result=[{**event["annotation"]["result"][0], "value": {"choices": [label]}}])
        event["task"]["id"] = task
        return json.dumps(event).encode()


def post_all(port: int, bodies: Any, count: int, clients: int, rate: float | None) -> int:
    """Send ``count`` bodies (``bodies(i)``) from ``clients`` keep-alive connections, paced at ``rate`` per second
    overall (None: as fast as possible); returns the number of answers that were not 200."""
    errors = [0] * clients
    started = time.perf_counter()
    headers = {"Content-Type": "application/json", "X-Crowdgate-Secret": SECRET}

    def client(k: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(k, count, clients):
            if rate:
                wait = started + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            body = bodies(i)
            try:
                connection.request("POST", "/hooks/labelstudio", body=body, headers=headers)
                reply = connection.getresponse()
                reply.read()
                errors[k] += reply.status != 200
            except OSError:
                errors[k] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(errors)


def depth(connection: redis.Redis) -> int:
    """Events waiting or in progress: the inbox stream's entries plus the RQ event queue's jobs."""
    return int(connection.xlen(Keys(PREFIX).inbox(QUEUE))) + Queue(QUEUE, connection=connection).count


def waiting(connection: redis.Redis) -> int:
    """Events no worker has taken yet: stream entries not delivered to a consumer, plus RQ's queued jobs."""
    stream = Keys(PREFIX).inbox(QUEUE)
    try:
        taken = int(connection.xpending(stream, InboxDrain.GROUP)["pending"])
    except redis.ResponseError:  # no consumer group yet: no worker has started
        taken = 0
    return int(connection.xlen(stream)) - taken + Queue(QUEUE, connection=connection).count


def scored(connection: redis.Redis) -> tuple[int, int]:
    """(submissions recorded, of them on tasks with no unscored mark)."""
    keys = Keys(PREFIX)
    tasks = sorted(int(t) for t in connection.smembers(keys.tasks(PROJECT)))
    pipe = connection.pipeline(transaction=False)
    for task in tasks:
        pipe.zcard(keys.task_submissions(PROJECT, task))
    counts = dict(zip(tasks, pipe.execute(), strict=True))
    unscored = {int(t) for t in connection.zrange(keys.unscored(PROJECT), 0, -1)}
    recorded = sum(counts.values())
    return recorded, recorded - sum(n for t, n in counts.items() if t in unscored)


def wait_scored(connection: redis.Redis, expected: int, timeout: float) -> tuple[int, float]:
    """Wait until every expected submission is scored; returns (scored, when)."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        if depth(connection) == 0:
            _, done = scored(connection)
            if done >= expected:
                return done, time.perf_counter()
        time.sleep(0.05)
    return done, time.perf_counter()


def process_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their children so far."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in pids:
        for member in process_tree(pid):
            try:
                fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def environment(redis_url: str, inbox: str, batch: int) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "CROWDGATE_WEBHOOK_SECRET": SECRET, "CROWDGATE_KEY_PREFIX": PREFIX,
            "CROWDGATE_INBOX": inbox, "CROWDGATE_DRAIN_BATCH": str(batch), "CROWDGATE_LOG_LEVEL": "WARNING"}


def start_workers(env: dict[str, str], log_dir: Path, n: int) -> list[Service]:
    started: list[Service] = []
    threads = [threading.Thread(target=lambda: started.append(start_worker(env, log_dir))) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(started) != n:
        for worker in started:
            worker.stop()
        raise RuntimeError("a worker did not start")
    return started


def soak(redis_url: str, connection: redis.Redis, log_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    connection.flushdb()
    env = environment(redis_url, "stream", args.batch)
    web = start_web(env, log_dir)
    workers = start_workers(env, log_dir, 2)
    events = Events()
    sent = int(args.rate * args.seconds)
    samples: list[tuple[float, int, dict[int, int]]] = []
    stop = threading.Event()
    pids = {"web": web.pid, **{f"worker{i + 1}": w.pid for i, w in enumerate(workers)}}

    def sample() -> None:
        begun = time.perf_counter()
        while not stop.wait(1.0):
            rss = {}
            for pid in pids.values():
                for member in process_tree(pid or 0):
                    value = rss_bytes(member)
                    if value:
                        rss[member] = value
            samples.append((time.perf_counter() - begun, depth(connection), rss))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        sampler.start()
        began = time.perf_counter()
        errors = post_all(int(web.url.rsplit(":", 1)[1]), events.body, sent, args.clients, args.rate)
        send_s = time.perf_counter() - began
        done, finished = wait_scored(connection, sent - errors, 120)
        stop.set()
        sampler.join()
    finally:
        for worker in workers:
            worker.stop()
        web.stop()
    reference_s = min(60.0, args.seconds / 3)
    base = next((rss for t, _, rss in samples if t >= reference_s), samples[0][2] if samples else {})
    # each process's highest resident memory from the reference point on, against its size there
    later = {pid: max(s[2].get(pid, 0) for s in samples if s[0] >= reference_s) / size - 1
             for pid, size in base.items()}
    return {"seconds": args.seconds, "rate": args.rate, "sent": sent, "errors": errors,
            "send_seconds": round(send_s, 1), "scored": done,
            "max_queue_depth": max((d for _, d, _ in samples), default=0),
            # depth counts the batches in hand too (up to CROWDGATE_DRAIN_BATCH per worker): its course over the
            # run, in quarters of the sending time, shows whether it is bounded or grows
            "queue_depth_by_quarter": [max((d for t, d, _ in samples if q * send_s / 4 <= t < (q + 1) * send_s / 4),
                                           default=0) for q in range(4)],
            "drained_after_send_s": round(finished - began - send_s, 1),
            "rss_growth_max": round(max(later.values(), default=0.0), 4),
            "rss_reference_s": reference_s, "processes_watched": len(base),
            "rss_mib_max": round(max((sum(s[2].values()) for s in samples), default=0) / 2**20, 1)}


def drain_rate(redis_url: str, connection: redis.Redis, log_dir: Path, args: argparse.Namespace, inbox: str,
               workers: int) -> dict[str, Any]:
    """Queue a backlog with no worker running, then time ``workers`` processes draining it."""
    connection.flushdb()
    env = environment(redis_url, inbox, args.batch)
    web = start_web(env, log_dir)
    try:
        events = Events(seed=11)
        errors = post_all(int(web.url.rsplit(":", 1)[1]), events.body, args.backlog, args.clients, None)
    finally:
        web.stop()
    queued = depth(connection)
    # The backlog waits under other names until every worker is up, so no worker drains while another imports.
    staged = {key: f"{key}:staged" for key in (Keys(PREFIX).inbox(QUEUE), Queue(QUEUE, connection=connection).key)
              if connection.exists(key)}
    for key, aside in staged.items():
        connection.rename(key, aside)
    running: list[Service] = []
    first: list[tuple[float, int]] = []

    def watch() -> None:  # the first moment a worker took an event: the drain starts there
        while not first:
            if waiting(connection) < queued:
                first.append(time.perf_counter())
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        running = start_workers(env, log_dir, workers)
        time.sleep(2.0)  # past their start-up
        pids = [w.pid for w in running if w.pid]
        cpu_before = cpu_seconds(pids)
        watcher.start()
        for key, aside in staged.items():
            connection.rename(aside, key)  # a worker's blocking read wakes on it (or its next poll finds it)
        done, ended = wait_scored(connection, args.backlog - errors, 600)
        cpu = cpu_seconds(pids) - cpu_before
    finally:
        for worker in running:
            worker.stop()
    watcher.join(1)
    seconds = max(ended - (first[0] if first else ended), 1e-6)
    return {"inbox": inbox, "workers": workers, "backlog": args.backlog, "queued": queued, "scored": done,
            "seconds": round(seconds, 2), "per_s": round(done / seconds, 1),
            # on a shared machine a worker may not get a whole core: events per CPU-second of one worker process
            "worker_cpu_s": round(cpu, 2), "per_worker_cpu_s": round(done / cpu, 1) if cpu else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the soak")
    parser.add_argument("--rate", type=float, default=200.0, help="submissions per second during the soak")
    parser.add_argument("--backlog", type=int, default=4000, help="events each drain measurement starts with")
    parser.add_argument("--batch", type=int, default=Settings().drain_batch, help="CROWDGATE_DRAIN_BATCH")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--skip-soak", action="store_true", help="only the drain measurements")
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="crowdgate-soak-"))
    redis_service = start_redis(log_dir)
    connection = redis.Redis.from_url(redis_service.url)
    try:
        line: dict[str, Any] = {"bench": "soak"}
        if not args.skip_soak:
            line.update(soak(redis_service.url, connection, log_dir, args))
        one = drain_rate(redis_service.url, connection, log_dir, args, "stream", 1)
        two = drain_rate(redis_service.url, connection, log_dir, args, "stream", 2)
        old = drain_rate(redis_service.url, connection, log_dir, args, "rq", 1)
        line.update({
            "workers_1_per_s": one["per_s"], "workers_2_per_s": two["per_s"],
            "baseline": "the same backlog drained by 1 worker on the old path, one RQ job per event "
                        "(CROWDGATE_INBOX=rq), same run",
            "baseline_workers_1_per_s": old["per_s"],
            "speedup_vs_baseline": round(one["per_s"] / old["per_s"], 2) if old["per_s"] else None,
            "per_worker_cpu_s": one["per_worker_cpu_s"], "baseline_per_worker_cpu_s": old["per_worker_cpu_s"],
            "drains": [one, two, old], "batch": args.batch,
            "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        })
        print(json.dumps(line), flush=True)
    finally:
        redis_service.stop()


if __name__ == "__main__":
    main()
