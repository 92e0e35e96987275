"""Growth: a synthetic project grown to ``--max-submissions`` submissions, measured at each size.

The project: ``--annotators`` (10,000) annotators whose accuracies are drawn from Beta(8, 2) (a few below
chance), a single-choice config of four classes (truth shares 50/25/15/10 %), tasks imported
``--tasks`` (200,000) at a time as the crowd finishes them, each wanting 1 to 5 labels (mean 3) from distinct
annotators, 2 % of them gold (``meta.gold``). The crowd works a window of 1,000 open tasks, as Label Studio's
queue hands them out. Every submission is a captured-shape ``ANNOTATION_CREATED`` webhook body, checked by
``qa_hooks.events.parse_event`` as the receiver does.

At each size of ``--sizes`` (10k, 100k, 1M) it prints one JSON line:

- ``event_cost_ms``: the mean wall time of ``qa_hooks.jobs.process_event`` (the worker's job without routing) on
  ``--sample`` fresh single-annotation events; ``event_cost_ratio`` divides it by the first size's, the baseline
  measured in the same run (target: at most 1.5 at 1M);
- ``redis_bytes_per_submission``: ``INFO memory`` ``used_memory`` now minus before the first event, over the
  submissions; ``bytes_by_kind``: ``MEMORY USAGE`` summed over a sample of each kind of key, scaled up to the
  kind's key count, per submission (where the bytes go);
- ``cron_seconds``: each periodic job's wall time: ``refresh_flags`` (``qa_hooks.jobs.refresh_flags``),
  ``reconcile`` (``qa_hooks.reconcile.reconcile_project`` against an in-bench Label Studio whose export holds
  every annotation made so far), ``retention`` (``qa_hooks.retention.apply_retention``, the retention sweep, with
  ``--retention-s`` on the crowd's clock); crowdgate has no periodic truth refit (``qa_hooks.truth`` runs
  offline), so there is none to time. The bytes are measured after the sweep (``..._before_sweep``: before it).

Between sizes the bulk is fed through the same job in its reconciliation form: ``process_event`` on
``ANNOTATIONS_CREATED`` events of ``--bulk`` annotations (the writes and rescoring of every submission, in fewer
round trips), so a million fits in a run; ``fill_per_s`` says how fast that went, ``single_per_s`` how fast the
single-event path went. Runs on a private ``redis-server`` (``scripts.services.start_redis``).

    python bench/scale.py [--max-submissions 1000000] [--sizes 10000,100000,1000000] [--sample 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import Settings, use
from qa_hooks.events import Event, TaskInfo, parse_event
from qa_hooks.jobs import process_event, refresh_flags
from qa_hooks.receiver import SECRET_HEADER
from qa_hooks.reconcile import HOOK_PATH, reconcile_project
from qa_hooks.retention import apply_retention
from qa_hooks.store import SubmissionStore
from scripts.services import start_redis

PROJECT, PREFIX = 7, "scale"
LABELS = ("Positive", "Negative", "Neutral", "Mixed")
TRUTH_SHARES = (0.5, 0.25, 0.15, 0.1)
LABEL_CONFIG = ('<View>\n  <Text name="text" value="$text"/>\n  <Choices name="sentiment" toName="text" '
                'choice="single">\n' + "".join(f'    <Choice value="{c}"/>\n' for c in LABELS)
                + "  </Choices>\n</View>")
PROJECT_INFO = {"id": PROJECT, "title": "Growth", "label_config": LABEL_CONFIG, "expert_instruction": "",
                "maximum_annotations": 5,
                "control_weights": {"sentiment": {"overall": 1.0, "type": "Choices",
                                                  "labels": {c: 1.0 for c in LABELS}}}}
WINDOW = 1000  # open tasks the crowd works on at once
GOLD_SHARE = 0.02
WORDS = ("the", "battery", "lasts", "all", "day", "but", "screen", "scratches", "easily", "and", "support",
         "never", "answered", "great", "value", "for", "money", "would", "buy", "again", "not")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _stamp(seconds: float) -> str:
    return (EPOCH + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


class Crowd:
    """The project's annotators, tasks and the stream of their submissions (deterministic for a seed)."""

    def __init__(self, annotators: int, tasks_per_import: int, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.accuracy = {a: self.rng.betavariate(8, 2) for a in range(1, annotators + 1)}
        self.speed = {a: math.exp(self.rng.gauss(math.log(12.0), 0.6)) for a in self.accuracy}
        self.annotator_ids = list(self.accuracy)
        self.tasks_per_import = tasks_per_import
        self.tasks: dict[int, dict[str, Any]] = {}  # every task made so far: truth, gold, quota, its annotations
        self.open: list[int] = []
        self.next_task = 1
        self.next_annotation = 1
        self.clock = 0.0
        for _ in range(WINDOW):
            self._open_task()

    def _open_task(self) -> None:
        task, self.next_task = self.next_task, self.next_task + 1
        truth = self.rng.choices(LABELS, TRUTH_SHARES)[0]
        text = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(12, 30)))
        meta = {"gold": truth} if self.rng.random() < GOLD_SHARE else {}
        self.tasks[task] = {"id": task, "project": PROJECT, "data": {"text": text}, "meta": meta, "truth": truth,
                            "quota": self.rng.randint(1, 5), "annotations": []}
        self.open.append(task)

    def _label(self, annotator: int, truth: str) -> str:
        if self.rng.random() < self.accuracy[annotator]:
            return truth
        return self.rng.choice([c for c in LABELS if c != truth])

    def next(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The next annotation as Label Studio's webhook carries it, and its task."""
        slot = self.rng.randrange(len(self.open))
        task = self.tasks[self.open[slot]]
        done = {a["completed_by"] for a in task["annotations"]}
        annotator = self.rng.choice(self.annotator_ids)
        while annotator in done:
            annotator = self.rng.choice(self.annotator_ids)
        self.clock += 0.05
        lead_time = round(self.speed[annotator] * math.exp(self.rng.gauss(0, 0.4)), 3)
        created = _stamp(self.clock)
        annotation = {
            "id": self.next_annotation, "task": task["id"], "project": PROJECT, "completed_by": annotator,
            "result": [{"id": uuid.UUID(int=self.rng.getrandbits(128)).hex[:10], "type": "choices",
                        "value": {"choices": [self._label(annotator, task["truth"])]}, "origin": "manual",
                        "to_name": "text", "from_name": "sentiment"}],
            "was_cancelled": False, "ground_truth": False, "created_at": created, "updated_at": created,
            "draft_created_at": None, "lead_time": lead_time, "prediction": {}, "result_count": 1,
            "unique_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), "import_id": None,
            "last_action": None, "bulk_created": False, "updated_by": annotator, "parent_prediction": None,
            "parent_annotation": None, "last_created_by": None,
        }
        self.next_annotation += 1
        task["annotations"].append(annotation)
        if len(task["annotations"]) >= task["quota"]:
            self.open[slot] = self.open[-1]
            self.open.pop()
            self._open_task()
        return annotation, task

    @staticmethod
    def task_body(task: dict[str, Any]) -> dict[str, Any]:
        return {"id": task["id"], "project": PROJECT, "data": task["data"], "meta": task["meta"], "overlap": 3,
                "is_labeled": False, "total_annotations": len(task["annotations"])}

    def webhook(self) -> dict[str, Any]:
        """The next submission as a checked event (``Event.to_dict``, what the worker's job receives)."""
        annotation, task = self.next()
        body = {"action": "ANNOTATION_CREATED", "annotation": annotation, "project": PROJECT_INFO,
                "task": self.task_body(task)}
        return parse_event(body).to_dict()

    def bulk(self, count: int) -> dict[str, Any]:
        """The next ``count`` submissions as one ``ANNOTATIONS_CREATED`` event, as reconciliation feeds them."""
        annotations, tasks = [], {}
        for _ in range(count):
            annotation, task = self.next()
            annotations.append(annotation)
            tasks[task["id"]] = task
        event = parse_event({"action": "ANNOTATIONS_CREATED", "project": PROJECT_INFO, "annotation": annotations})
        infos = [TaskInfo(t["id"], t["data"], t["meta"]) for t in tasks.values()]
        return Event(event.action, PROJECT, event.project_info, submissions=event.submissions,
                     tasks=infos).to_dict()


class ExportOnly:
    """Label Studio as reconciliation reads it, from the crowd's own record: the project, its export, its
    crowdgate webhook (present and active), and the task listings that confirm deletions."""

    def __init__(self, crowd: Crowd) -> None:
        self.crowd = crowd

    def project(self, project: int) -> dict[str, Any]:
        return dict(PROJECT_INFO)

    def export(self, project: int) -> list[dict[str, Any]]:
        return [{**self.crowd.task_body(t), "annotations": t["annotations"]} for t in self.crowd.tasks.values()]

    def webhooks(self, project: int) -> list[dict[str, Any]]:
        return [{"id": 1, "project": project, "url": "http://crowdgate.test" + HOOK_PATH, "is_active": True,
                 "send_payload": True, "send_for_all_actions": True, "headers": {SECRET_HEADER: "x"}}]

    def tasks(self, project: int, ids: list[int] | None = None) -> list[dict[str, Any]]:
        wanted = self.crowd.tasks if ids is None else {i: self.crowd.tasks[i] for i in ids if i in self.crowd.tasks}
        return [self.crowd.task_body(t) for t in wanted.values()]

    def annotations(self, task: int) -> list[dict[str, Any]]:
        return list(self.crowd.tasks[task]["annotations"])


# Kinds of key, by the pattern after the project's prefix, for the breakdown of the bytes.
KINDS = {"submission": "sub:*", "annotation_id": "annid:*", "task_subs": "task:*:subs",
         "task_score": "task:*:score", "task_contrib": "task:*:contrib", "task_info": "task:[0-9]*[0-9]",
         "annotator_subs": "annotator:*:subs", "annotator_lead_times": "annotator:*:lead_times",
         "annotator_stats": "annotator:*:stats", "annotator_confusion": "annotator:*:confusion",
         "shared_results": "results", "retention_queue": "retain"}


def bytes_by_kind(connection: redis.Redis, submissions: int, sample: int = 300) -> dict[str, float]:
    """Bytes per submission of each kind of key: MEMORY USAGE of up to ``sample`` keys, scaled to the count."""
    found: dict[str, list[bytes]] = {kind: [] for kind in KINDS}
    counts = dict.fromkeys(KINDS, 0)
    head = f"{PREFIX}:p:{PROJECT}:"
    for key in connection.scan_iter(match=f"{head}*", count=5000):
        rest = key.decode()[len(head):]
        for kind, pattern in KINDS.items():
            if _matches(rest, pattern):
                counts[kind] += 1
                if len(found[kind]) < sample:
                    found[kind].append(key)
                break
    out = {}
    for kind, keys in found.items():
        if keys:
            pipe = connection.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key, samples=0)
            mean = sum(int(v or 0) for v in pipe.execute()) / len(keys)
            out[kind] = round(mean * counts[kind] / submissions, 1)
    return out


def _matches(text: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(text, pattern) and (pattern != "task:[0-9]*[0-9]" or text[5:].isdigit())


def measure(connection: redis.Redis, crowd: Crowd, sample: int) -> dict[str, float]:
    """Mean ms of process_event over ``sample`` fresh single-annotation webhooks (events built beforehand)."""
    events = [crowd.webhook() for _ in range(sample)]
    started = time.perf_counter()
    for event in events:
        process_event(event, PREFIX, connection)
    return {"event_cost_ms": (time.perf_counter() - started) * 1000 / sample}


def cron(connection: redis.Redis, crowd: Crowd, settings: Settings, reconcile: bool,
         retention_s: float) -> dict[str, float]:
    out: dict[str, float] = {}
    if retention_s > 0:
        started = time.perf_counter()
        # the crowd's own clock: tasks whose newest label is retention_s older than the latest are settled
        apply_retention(PREFIX, connection, retention_s, now=EPOCH.timestamp() + crowd.clock)
        out["retention"] = time.perf_counter() - started
    started = time.perf_counter()
    refresh_flags(PREFIX, connection)
    out["refresh_flags"] = time.perf_counter() - started
    if reconcile:
        started = time.perf_counter()
        totals = reconcile_project(PROJECT, PREFIX, connection, ExportOnly(crowd), settings=settings)
        out["reconcile"] = time.perf_counter() - started
        if totals["created"] or totals["updated"] or totals["deleted"]:
            raise AssertionError(f"reconciliation found differences in a complete record: {totals}")
    return {k: round(v, 3) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-submissions", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--annotators", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--sample", type=int, default=1000, help="single events timed at each size")
    parser.add_argument("--bulk", type=int, default=500, help="annotations per bulk event between sizes")
    parser.add_argument("--no-reconcile", action="store_true", help="skip timing reconciliation")
    parser.add_argument("--retention-s", type=float, default=600.0,
                        help="retention in the crowd's seconds (20 labels a second: 600 keeps the last 12,000 "
                             "labels whole); 0: no sweep")
    args = parser.parse_args(argv)
    sizes = sorted({s for s in (int(x) for x in args.sizes.split(",")) if s <= args.max_submissions})
    settings = use(Settings.from_env().with_(key_prefix=PREFIX))
    crowd = Crowd(args.annotators, args.tasks)
    with tempfile.TemporaryDirectory(prefix="crowdgate-scale-") as logs:
        server = start_redis(Path(logs))
        try:
            connection = redis.Redis.from_url(server.url)
            settings = settings.with_(redis_url=server.url)
            before = int(connection.info("memory")["used_memory"])
            done, baseline = 0, None
            fill_seconds = 0.0
            for size in sizes:
                started = time.perf_counter()
                while done < size - args.sample:
                    count = min(args.bulk, size - args.sample - done)
                    process_event(crowd.bulk(count), PREFIX, connection)
                    done += count
                fill_seconds += time.perf_counter() - started
                cost = measure(connection, crowd, args.sample)
                done += args.sample
                used_whole = int(connection.info("memory")["used_memory"])
                whole_by_kind = bytes_by_kind(connection, done)
                cron_seconds = cron(connection, crowd, settings, not args.no_reconcile, args.retention_s)
                used = int(connection.info("memory")["used_memory"])
                baseline = baseline or cost["event_cost_ms"]
                line = {
                    "bench": "scale", "submissions": done, "tasks": crowd.next_task - 1,
                    "annotators_seen": len(SubmissionStore(connection, PREFIX).annotators(PROJECT)),
                    "event_cost_ms": round(cost["event_cost_ms"], 3),
                    "event_cost_baseline_ms": round(baseline, 3),
                    "event_cost_ratio": round(cost["event_cost_ms"] / baseline, 3),
                    "single_per_s": round(1000 / cost["event_cost_ms"], 1),
                    "fill_per_s": round((done - len(sizes[:sizes.index(size) + 1]) * args.sample) / fill_seconds, 1)
                    if fill_seconds else None,
                    "redis_bytes_per_submission": round((used - before) / done, 1),
                    "redis_bytes_per_submission_before_sweep": round((used_whole - before) / done, 1),
                    "redis_used_memory": used,
                    "retention_s": args.retention_s,
                    "bytes_by_kind": bytes_by_kind(connection, done),
                    "bytes_by_kind_before_sweep": whole_by_kind,
                    "cron_seconds": cron_seconds,
                }
                print(json.dumps(line), flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
