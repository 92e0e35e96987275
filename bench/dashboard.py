"""The dashboard on a large project: page seconds, cached and not, against a per-annotator read baseline.

Grows ``bench/scale.py``'s synthetic project (its ``Crowd``: Beta(8, 2) accuracies, four classes, 1 to 5 labels per
task, 2 % gold) to ``--submissions`` (100,000) submissions from ``--annotators`` (1,000) annotators through the
product's own job (``qa_hooks.jobs.process_event`` on bulk events, as reconciliation feeds them), on a private
``redis-server``; then, with the real web app (``crowdgate.web.create_app``, Flask's test client, the admin token):

- ``page_uncached_s``: the first ``GET /dashboard/<project>`` of a fresh app (nothing cached: every read done),
  median of ``--repeat``; ``page_refresh_s``: the page with the report cache off in an app that has read it
  before (counts and reliabilities of unchanged annotators reused); ``page_cached_s``: the same page within the
  cache's lifetime (rendering only); ``page_stale_s``: the page once the cache expired (the stale report served
  while a background thread reads a fresh one); ``index_cached_s``: ``GET /dashboard/`` from the cache;
- ``read_s``: ``crowdgate.report.data.read_project`` alone (batched pipelines and Lua calls); ``read_memo_s``: the
  same with the reliabilities of unchanged annotators reused (what the cache's refresh does);
- ``baseline_read_s``: the same figures read the plain way, one annotator at a time, in the same run
  (``SubmissionStore.summary``, which loads every submission, and ``Ledger.reliability`` per annotator);
  ``speedup`` = baseline over ``read_s``.

    python bench/dashboard.py [--submissions 100000] [--annotators 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale import PREFIX, PROJECT, Crowd
from core.settings import Settings, use
from crowdgate.report.data import read_project
from crowdgate.web import create_app
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from scripts.services import start_redis

TOKEN = "bench-admin-token"


def _timed(step, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def baseline_read(connection: redis.Redis) -> None:
    """What a page would read without the batched reads: every submission, then each annotator's record alone."""
    store, ledger = SubmissionStore(connection, PREFIX), Ledger(connection, PREFIX)
    store.summary(PROJECT)
    for annotator in store.annotators(PROJECT):
        ledger.reliability(PROJECT, annotator)
        ledger.flags(PROJECT, annotator)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=100_000)
    parser.add_argument("--annotators", type=int, default=1_000)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--bulk", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crowdgate-bench-dashboard-") as logs:
        server = start_redis(Path(logs))
        try:
            connection = redis.Redis.from_url(server.url)
            settings = use(Settings.from_env().with_(redis_url=server.url, key_prefix=PREFIX, admin_token=TOKEN,
                                                     webhook_secret="bench-secret", dashboard_cache_s=0.0))
            crowd = Crowd(args.annotators, args.tasks)
            started, done = time.perf_counter(), 0
            while done < args.submissions:
                count = min(args.bulk, args.submissions - done)
                process_event(crowd.bulk(count), PREFIX, connection)
                done += count
            fill_s = time.perf_counter() - started

            headers = {"Authorization": f"Bearer {TOKEN}"}
            cold_apps = [create_app(settings).test_client() for _ in range(args.repeat)]  # nothing read yet
            page_uncached = _timed(lambda: cold_apps.pop().get(f"/dashboard/{PROJECT}", headers=headers),
                                   args.repeat)
            uncached = create_app(settings).test_client()
            page = uncached.get(f"/dashboard/{PROJECT}", headers=headers)
            assert page.status_code == 200, page.status_code
            page_refresh = _timed(lambda: uncached.get(f"/dashboard/{PROJECT}", headers=headers), args.repeat)
            cached = create_app(settings.with_(dashboard_cache_s=300.0)).test_client()
            cached.get(f"/dashboard/{PROJECT}", headers=headers)
            page_cached = _timed(lambda: cached.get(f"/dashboard/{PROJECT}", headers=headers), args.repeat)
            index = _timed(lambda: cached.get("/dashboard/", headers=headers), args.repeat)
            stale = create_app(settings.with_(dashboard_cache_s=0.001)).test_client()
            stale.get(f"/dashboard/{PROJECT}", headers=headers)
            page_stale = _timed(lambda: stale.get(f"/dashboard/{PROJECT}", headers=headers), args.repeat)
            read = _timed(lambda: read_project(connection, PREFIX, PROJECT), args.repeat)
            memo: dict = {}
            read_project(connection, PREFIX, PROJECT, memo)
            read_warm = _timed(lambda: read_project(connection, PREFIX, PROJECT, memo), args.repeat)
            baseline = _timed(lambda: baseline_read(connection), args.repeat)
            report = read_project(connection, PREFIX, PROJECT)
            print(json.dumps({
                "bench": "dashboard", "submissions": report.summary["submissions"] + report.summary["skipped"],
                "annotators": len(report.annotators), "tasks": len(report.tasks), "fill_s": round(fill_s, 1),
                "page_uncached_s": round(page_uncached, 3), "page_refresh_s": round(page_refresh, 3),
                "page_cached_s": round(page_cached, 4),
                "page_stale_s": round(page_stale, 3), "index_cached_s": round(index, 4), "read_s": round(read, 3),
                "read_memo_s": round(read_warm, 3), "baseline_read_s": round(baseline, 3),
                "speedup": round(baseline / read, 1), "page_bytes": len(page.data), "repeat": args.repeat,
            }), flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
