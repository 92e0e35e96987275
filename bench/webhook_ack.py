"""How fast the receiver acknowledges Label Studio webhooks, persisted, under gunicorn on loopback.

Posts N captured-shape ANNOTATION_CREATED events (distinct unique ids) from C concurrent clients to
``/hooks/labelstudio`` and, as a baseline in the same run against the same server, the same bodies to the ML
backend's ``/webhook`` relabelled ``PROJECT_UPDATED``, which it parses and acknowledges without touching Redis.
Prints one JSON line:
``events, seconds, events_per_s, p50_ms, p99_ms, persisted`` plus the baseline's figures and the ratios.
Targets on a 2-core machine: p99 <= 25 ms, >= 500 events/s, persisted == events.

    python bench/webhook_ack.py [--events 5000] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import redis
from rq import Queue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.keys import Keys
from core.settings import Settings
from scripts.services import start_redis, start_web

FIXTURE = Path(__file__).resolve().parents[1] / "tests/fixtures/labelstudio-1.23.2/webhook_annotation_created.json"
SECRET = "bench-secret"


def make_bodies(n: int) -> list[bytes]:
    template = json.loads(FIXTURE.read_text())
    bodies = []
    for i in range(n):
        event = json.loads(json.dumps(template))
        event["annotation"].update(id=1000 + i, unique_id=str(uuid.uuid4()), task=1 + i % 500,
                                   completed_by=1 + i % 40)
        event["task"]["id"] = 1 + i % 500
        bodies.append(json.dumps(event).encode())
    return bodies


def blast(port: int, path: str, bodies: list[bytes], clients: int) -> tuple[float, np.ndarray, int]:
    """Send every body once, split over ``clients`` keep-alive connections; returns wall s, latencies, errors."""
    latencies = np.zeros(len(bodies))
    errors = [0] * clients
    headers = {"Content-Type": "application/json", "X-Crowdgate-Secret": SECRET}

    def client(k: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(k, len(bodies), clients):
            started = time.perf_counter()
            connection.request("POST", path, body=bodies[i], headers=headers)
            reply = connection.getresponse()
            reply.read()
            latencies[i] = time.perf_counter() - started
            if reply.status != 200:
                errors[k] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies * 1000, sum(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="crowdgate-bench-"))
    redis_service = start_redis(log_dir)
    env = {**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_WEBHOOK_SECRET": SECRET}
    web = start_web(env, log_dir, workers=args.workers)
    port = int(web.url.rsplit(":", 1)[1])
    try:
        warm = make_bodies(200)
        blast(port, "/webhook", warm, args.clients)
        blast(port, "/hooks/labelstudio", warm, args.clients)
        connection = redis.Redis.from_url(redis_service.url)
        settings = Settings.from_env()
        queue = Queue(settings.events_queue, connection=connection)
        inbox = Keys(settings.key_prefix).inbox(settings.events_queue)  # the stream inbox (CROWDGATE_INBOX=stream)
        queue.empty()
        connection.flushdb()  # our private server: forget the warm-up events

        bodies = make_bodies(args.events)
        # Same size and parsing; an action the ML backend acknowledges without touching Redis.
        plain = [b.replace(b'"ANNOTATION_CREATED"', b'"PROJECT_UPDATED"', 1) for b in bodies]
        base_s, base_ms, base_err = blast(port, "/webhook", plain, args.clients)
        seconds, ms, errors = blast(port, "/hooks/labelstudio", bodies, args.clients)
        persisted = queue.count + int(connection.xlen(inbox))
        line = {
            "events": args.events,
            "clients": args.clients,
            "gunicorn_workers": args.workers,
            "seconds": round(seconds, 3),
            "events_per_s": round(args.events / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "errors": errors,
            "persisted": persisted,
            "baseline": "the same bodies as PROJECT_UPDATED to /webhook on the same server (parse and answer only)",
            "baseline_events_per_s": round(args.events / base_s, 1),
            "baseline_p50_ms": round(float(np.percentile(base_ms, 50)), 2),
            "baseline_p99_ms": round(float(np.percentile(base_ms, 99)), 2),
            "baseline_errors": base_err,
            "throughput_ratio_vs_baseline": round(base_s / seconds, 3),
            "p99_ratio_vs_baseline": round(float(np.percentile(ms, 99) / np.percentile(base_ms, 99)), 3),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(line), flush=True)
    finally:
        web.stop()
        redis_service.stop()


if __name__ == "__main__":
    main()
