"""``crowdgate simulate``: annotators who log in to a real Label Studio and work through their own queue.

Each simulated annotator is a Label Studio user with a login (invite sign-up, or a log-in when the account
exists) acting with their own API token: they ask ``GET /api/projects/P/next/`` for their next task (through their
Data Manager tab when crowdgate routing gave them one, ``?view=V``), decide as their profile says
(:mod:`crowdgate.crowd_profiles`) and submit ``POST /api/tasks/T/annotations/`` as themselves, so ``completed_by``
is them and Label Studio fires the webhook as for a person. Submissions across all annotators go through one
token bucket (``--rate``); annotators work concurrently, one thread each, with at most ``--concurrency`` calls to
Label Studio in flight at once (its SQLite-backed server stalls ``/next/`` past 30 s with a dozen at once on a
loaded machine).

Two crowds:

- ``--profiles diligent=5,sloppy=2,spammer=1,bot=1,colluding_pair=1``: synthetic annotators. The truth they
  answer against is the task's gold (crowdgate's own copy in Redis, where ``crowdgate seed`` keeps it, at
  ``REDIS_URL``/``CROWDGATE_KEY_PREFIX``; else ``meta.gold``; the simulator reads it, its annotators never do)
  or, where a task has none, the expert answer of a crowd set's item (``--truth rte``, matched by the item id in
  ``data.item``) or else a latent answer drawn per task from the seed, the same for every annotator.
- ``--replay rte``: the real crowd of a shipped set (``data/crowd/rte.labels.csv``): each real worker becomes a
  user who answers with their real label on the items they labelled. Tasks are matched by the item id in
  ``data.item`` (or ``meta.item``); the simulator writes each matched task's workers into ``data.crowdgate_replay``
  (``|email|email|``, once) and each worker opens a tab offering only their items, so Label Studio serves them
  exactly those, in its own order. A task stops being served once it has ``maximum_annotations`` annotations:
  labels left unserved that way are reported.

Accounts are ``NAME@sim.crowdgate.test`` (``@replay.crowdgate.test`` for replays) with a password derived from the
admin key, so a second run logs the same people back in. The report counts, per annotator, the tasks served, the
answers and skips submitted and the errors; errors (Label Studio down, a 4xx) are counted and the annotator moves
on or stops after ``MAX_CONSECUTIVE_ERRORS`` in a row, and every call has a timeout, so a run never hangs.
Exit status: 0 when everything went through, 1 when errors were counted, 2 for a usage error, 3 when the run could
not start (Label Studio unreachable, no such project, a config without Choices, a crowd set not found).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import click

from core.label_config import LabelConfig, LabelConfigError
from core.labelstudio import LabelStudioClient, LabelStudioError, offer_token, user_id
from core.settings import Settings
from crowdgate.crowd_profiles import (
    Profile,
    ProfileMixError,
    ReplayWorker,
    TaskChoices,
    parse_mix,
    synthetic_crowd,
)
from crowdgate.rate_limit import TokenBucket
from crowdgate.replay_crowd import CrowdSetError, ReplayCrowd
from ml_backend.labeling import choice_region

__all__ = ["REPLAY_FIELD", "AnnotatorReport", "SimulatedAnnotator", "Simulation", "SimulationReport",
           "SimulationSetupError", "account_password", "replay_annotators", "simulate", "synthetic_annotators"]

REPLAY_FIELD = "crowdgate_replay"
SYNTHETIC_DOMAIN = "sim.crowdgate.test"
REPLAY_DOMAIN = "replay.crowdgate.test"
MAX_CONSECUTIVE_ERRORS = 3
# A replayed worker's queue can look empty while their task is held by other annotators' locks (Label Studio
# counts a lock toward the overlap): ask again a few times before calling their labels unserved.
EMPTY_QUEUE_RETRIES = 5
EMPTY_QUEUE_WAIT_S = 1.0
# Simulated annotators wait at most this long for one answer: a stalled Label Studio is an error, not a hang.
CALL_TIMEOUT_S = 30.0
# Sign-ups and log-ins hash a password (Django's PBKDF2, CPU-bound on Label Studio's side): a few at a time, so a
# crowd arriving together does not starve the annotators already at work.
LOGINS_AT_ONCE = 2
# Annotators present at once: a synthetic crowd all together (up to MAX_PRESENT), so that the spammer and the bot
# work beside the diligent; a replayed crowd (hundreds of workers with a few items each) in waves of REPLAY_WAVE.
MAX_PRESENT = 32
REPLAY_WAVE = 8
# Calls to Label Studio in flight at once, across all annotators.
DEFAULT_CONCURRENCY = 4


class SimulationSetupError(RuntimeError):
    """The simulation cannot start (the message says what to do)."""


@dataclass(frozen=True)
class SimulatedAnnotator:
    """One simulated person: a short ``name``, the ``email`` of their account and how they answer."""

    name: str
    email: str
    profile: Profile
    view_field: str | None = None  # replays: the data field listing the tasks offered to them


@dataclass
class AnnotatorReport:
    name: str
    email: str
    kind: str
    user: int | None = None
    queue: str = "next"  # "next" (the project's queue) or "view N" (their Data Manager tab)
    served: int = 0  # tasks /next/ handed them
    submitted: int = 0  # answers
    skipped: int = 0  # skips (was_cancelled)
    errors: int = 0
    lead_time_s: float = 0.0  # the lead times recorded, summed
    login_s: float = 0.0  # signing up or logging in and opening their queue
    stopped: str = ""  # why they stopped: "queue empty", "limit", "errors", "login failed"
    last_error: str | None = None


@dataclass
class SimulationReport:
    project: int
    crowd: str  # "profiles diligent=5,..." or "replay rte"
    elapsed_s: float
    rate: float | None
    limit: int | None
    annotators: list[AnnotatorReport]
    errors: dict[str, int] = field(default_factory=dict)  # kind ("http 400", "connection") -> count
    unserved: int = 0  # replays: labels whose task Label Studio did not serve that worker
    setup_writes: int = 0  # replays: tasks whose data got the offer field
    truth: dict[str, int] = field(default_factory=dict)  # tasks whose truth is gold, expert or latent

    @property
    def submitted(self) -> int:
        return sum(a.submitted for a in self.annotators)

    @property
    def skipped(self) -> int:
        return sum(a.skipped for a in self.annotators)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        done = self.submitted + self.skipped
        return {"project": self.project, "crowd": self.crowd, "elapsed_s": round(self.elapsed_s, 2),
                "rate_limit": self.rate, "limit": self.limit, "submitted": self.submitted, "skipped": self.skipped,
                "annotations_per_s": round(done / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
                "errors": self.error_count, "errors_by_kind": dict(self.errors), "unserved": self.unserved,
                "setup_writes": self.setup_writes, "truth": dict(self.truth),
                "annotators": [asdict(a) for a in self.annotators]}


def account_password(admin_key: str, email: str) -> str:
    """A simulated account's password: derived from the admin key, so only its holder can log the account in,
    and a re-run logs the same person back in."""
    return hashlib.sha256(f"crowdgate-simulate\0{admin_key}\0{email}".encode()).hexdigest()[:24]


def synthetic_annotators(mix: Mapping[str, int], domain: str = SYNTHETIC_DOMAIN) -> list[SimulatedAnnotator]:
    return [SimulatedAnnotator(name, f"{name}@{domain}", profile) for name, profile in synthetic_crowd(mix)]


def replay_annotators(crowd: ReplayCrowd, control: str, seed: int,
                      domain: str = REPLAY_DOMAIN) -> list[SimulatedAnnotator]:
    """One annotator per worker of ``crowd``, in an order drawn from ``seed`` (who shows up first), each with a
    pace of their own (median seconds per task, log-normal around 10 s across the crowd)."""
    workers = sorted(crowd.workers)
    rng = random.Random(f"{seed}:replay-order")
    rng.shuffle(workers)
    people = []
    for worker in workers:
        pace = random.Random(f"{seed}:pace:{worker}").lognormvariate(2.3, 0.5)
        profile = ReplayWorker(worker, crowd.labels[worker], control, median_s=round(pace, 2))
        people.append(SimulatedAnnotator(worker, f"{worker.lower()}@{domain}", profile, view_field=REPLAY_FIELD))
    return people


GoldSource = Callable[[int, str], dict[int, Any]]
"""(project, label config) -> task -> gold answer (a label or a result list) kept outside Label Studio."""


def ledger_gold(redis_url: str, prefix: str) -> GoldSource | None:
    """The gold answers crowdgate keeps (``crowdgate seed`` puts them in the ledger, never in Label Studio,
    whose ``/next/`` shows ``meta`` to annotators); None when that Redis does not answer (the run then knows
    only ``meta.gold``)."""
    import redis

    from qa_hooks.ledger import Ledger

    connection = redis.Redis.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=5.0)
    try:
        connection.ping()
    except redis.RedisError:
        return None
    ledger = Ledger(connection, prefix)

    def read(project: int, label_config: str) -> dict[int, Any]:
        try:
            return {task: ledger.gold(project, task, label_config) for task in ledger.gold_tasks(project)}
        except redis.RedisError:  # Redis went away after the ping: run on meta.gold alone
            return {}

    return read


def _error_kind(exc: LabelStudioError) -> str:
    return "connection" if exc.status == 0 else f"http {exc.status}"


def _gold_labels(gold: Any, controls: Sequence[str]) -> dict[str, str]:
    """``meta.gold`` as control -> label: a plain label belongs to the first control, a result list names its
    controls."""
    if isinstance(gold, str | int) and not isinstance(gold, bool):
        return {controls[0]: str(gold)} if controls else {}
    found: dict[str, str] = {}
    if isinstance(gold, list):
        for region in gold:
            if not isinstance(region, dict):
                continue
            choices = (region.get("value") or {}).get("choices")
            if region.get("from_name") in controls and isinstance(choices, list) and choices:
                found[str(region["from_name"])] = str(choices[0])
    return found


class Simulation:
    """One run: ``annotators`` working ``project`` through ``admin``'s server (see the module docstring)."""

    def __init__(self, admin: LabelStudioClient, project: int, annotators: Sequence[SimulatedAnnotator], *,
                 crowd: str, rate: float | None = 5.0, limit: int | None = None, seed: int = 0,
                 concurrency: int = DEFAULT_CONCURRENCY, present: int | None = None, item_field: str = "item",
                 time_scale: float = 0.0,
                 call_timeout: float = CALL_TIMEOUT_S, expert: Mapping[str, str] | None = None,
                 gold_source: GoldSource | None = None,
                 progress: Callable[[AnnotatorReport], None] | None = None) -> None:
        self.admin, self.project, self.annotators = admin, project, list(annotators)
        self.crowd, self.rate, self.limit, self.seed = crowd, rate, limit, seed
        self.present = max(1, present or min(len(self.annotators), MAX_PRESENT) or 1)
        self._in_flight = threading.Semaphore(max(1, concurrency))
        self.item_field, self.time_scale, self.call_timeout = item_field, time_scale, call_timeout
        self.progress = progress
        self.expert = dict(expert or {})  # item id -> expert answer (a crowd set's gold) for tasks without gold
        self.gold_source = gold_source
        self.truth_sources: Counter[str] = Counter()  # where each task's truth came from
        self.bucket = TokenBucket(rate)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._logins = threading.Semaphore(LOGINS_AT_ONCE)
        self._slots = limit
        self._errors: Counter[str] = Counter()
        self.options: dict[str, tuple[str, ...]] = {}
        self.truth: dict[int, dict[str, str]] = {}
        self.items: dict[int, str] = {}
        self.config_xml = ""
        self._tasks: list[dict[str, Any]] | None = None

    # -- setup (admin key) ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Read the project's config and tasks (options, truth, item ids); :class:`SimulationSetupError` when
        the run cannot start."""
        try:
            project = self.admin.project(self.project)
        except LabelStudioError as exc:
            if exc.status == 404:
                raise SimulationSetupError(f"Label Studio at {self.admin.url} has no project {self.project}") from exc
            raise SimulationSetupError(f"cannot read project {self.project} from Label Studio at {self.admin.url}: "
                                       f"{exc} (is it running, and is LABEL_STUDIO_API_KEY an admin token?)") from exc
        self.config_xml = str(project.get("label_config") or "")
        try:
            config = LabelConfig.parse(self.config_xml)
        except LabelConfigError as exc:
            raise SimulationSetupError(f"project {self.project}'s label config does not parse: {exc}") from exc
        self.options = {c.name: c.labels for c in config.controls if c.type == "choices" and c.labels}
        if not self.options:
            raise SimulationSetupError(f"project {self.project}'s label config has no Choices control: simulated "
                                       "annotators answer Choices (classification, RTE, sentiment, moderation)")
        try:
            tasks = self.admin.tasks(self.project)
        except LabelStudioError as exc:
            raise SimulationSetupError(f"cannot list project {self.project}'s tasks: {exc}") from exc
        controls = list(self.options)
        kept_gold = self.gold_source(self.project, self.config_xml) if self.gold_source is not None else {}
        for task in tasks:
            tid = int(task["id"])
            data, meta = task.get("data") or {}, task.get("meta") or {}
            truth = _gold_labels(kept_gold[tid], controls) if tid in kept_gold else {}
            if not truth and "gold" in meta:
                truth = _gold_labels(meta.get("gold"), controls)
            source = "gold" if truth else ""
            item = data.get(self.item_field, meta.get(self.item_field))
            if item is not None:
                self.items[tid] = str(item)
                if not truth and str(item) in self.expert:
                    truth[controls[0]] = self.expert[str(item)]
                    source = "expert"
            for control, opts in self.options.items():
                # No gold: a latent answer per task, drawn from the seed, that every annotator's truth is.
                if control not in truth:
                    truth[control] = random.Random(f"{self.seed}:truth:{tid}:{control}").choice(list(opts))
                    source = source or "latent"
            self.truth_sources[source] += 1
            self.truth[tid] = truth
        self._tasks = tasks

    def _offer_replay_items(self, tasks: list[dict[str, Any]]) -> int:
        """Write each matched task's replay workers into ``data[REPLAY_FIELD]`` (a complete ``data``, as Label
        Studio replaces it whole); tasks already right are left alone."""
        replaying = [a for a in self.annotators if a.view_field]
        if not replaying:
            return 0
        wanted: dict[str, set[str]] = {}
        for person in replaying:
            assert isinstance(person.profile, ReplayWorker)
            for item in person.profile.labels:
                wanted.setdefault(item, set()).add(offer_token(person.email).strip("|"))
        writes = 0
        for task in tasks:
            tid = int(task["id"])
            item = self.items.get(tid)
            people = wanted.get(item or "")
            if not people:
                continue
            value = "|" + "|".join(sorted(people)) + "|"
            data = dict(task.get("data") or {})
            if data.get(REPLAY_FIELD) == value:
                continue
            try:
                self.admin.replace_task_data(tid, {**data, REPLAY_FIELD: value})
            except LabelStudioError as exc:
                raise SimulationSetupError(f"cannot offer task {tid} to its replay workers: {exc}") from exc
            writes += 1
        return writes

    # -- the run ----------------------------------------------------------------------------------------

    def run(self) -> SimulationReport:
        """Prepare (unless done), offer replay items, let every annotator work; the report."""
        if self._tasks is None:
            self.prepare()
        writes = self._offer_replay_items(self._tasks or [])
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.present, thread_name_prefix="annotator") as pool:
            try:
                reports = list(pool.map(self._work, self.annotators))
            except KeyboardInterrupt:
                self.stop.set()  # every annotator ends their current call and stops
                raise
        elapsed = time.monotonic() - started
        unserved = 0
        for person, report in zip(self.annotators, reports, strict=True):
            if report.stopped == "queue empty":
                unserved += self._labels_left(person, report)
        replaying = all(isinstance(a.profile, ReplayWorker) for a in self.annotators)
        truth = {} if replaying else dict(self.truth_sources)  # a replay answers with recorded labels, not a truth
        return SimulationReport(self.project, self.crowd, elapsed, self.rate, self.limit, reports,
                                dict(self._errors), unserved, writes, truth)

    def _labels_left(self, person: SimulatedAnnotator, report: AnnotatorReport) -> int:
        """Recorded labels of a replayed worker on this project's items not yet given (0 for other profiles)."""
        if not isinstance(person.profile, ReplayWorker):
            return 0
        served_items = set(self.items.values())
        mine = sum(1 for item in person.profile.labels if item in served_items)
        return max(0, mine - report.submitted - report.skipped)

    def _take_slot(self) -> bool:
        with self._lock:
            if self._slots is None:
                return True
            if self._slots <= 0:
                return False
            self._slots -= 1
            return True

    def _give_back_slot(self) -> None:
        with self._lock:
            if self._slots is not None:
                self._slots += 1

    def _error(self, report: AnnotatorReport, exc: LabelStudioError) -> None:
        report.errors += 1
        report.last_error = str(exc)[:300]
        with self._lock:
            self._errors[_error_kind(exc)] += 1

    def _log_in(self, person: SimulatedAnnotator, report: AnnotatorReport) -> LabelStudioClient | None:
        started = time.monotonic()
        try:
            with self._logins, self._in_flight:
                me = self.admin.invite_annotator(person.email, account_password(self.admin.api_key, person.email))
        except LabelStudioError as exc:
            self._error(report, exc)
            report.stopped = "login failed"
            return None
        finally:
            report.login_s = round(time.monotonic() - started, 3)
        report.user = me.id
        client = self.admin.as_user(me.token)
        client.timeout = self.call_timeout
        return client

    def _queue(self, client: LabelStudioClient, person: SimulatedAnnotator) -> int | None:
        """The tab this annotator works from: their replay offer, else the one routing assigned them, else none."""
        with self._in_flight:
            if person.view_field:
                return client.offer_view(self.project, person.email, person.view_field)
            return client.assigned_view(self.project, person.email)

    def _work(self, person: SimulatedAnnotator) -> AnnotatorReport:
        report = AnnotatorReport(person.name, person.email, person.profile.kind)
        try:
            self._session(person, report)
        finally:
            if self.progress is not None:
                self.progress(report)
        return report

    def _session(self, person: SimulatedAnnotator, report: AnnotatorReport) -> None:
        if self.limit is not None and self._slots is not None and self._slots <= 0:
            report.stopped = "limit"
            return
        client = self._log_in(person, report)
        if client is None:
            return
        try:
            view = self._queue(client, person)
        except LabelStudioError as exc:
            self._error(report, exc)
            report.stopped = "errors"
            return
        report.queue = "next" if view is None else f"view {view}"
        rng = random.Random(f"{self.seed}:{person.email}")
        consecutive, empty = 0, 0
        while not self.stop.is_set():
            if consecutive >= MAX_CONSECUTIVE_ERRORS:
                report.stopped = "errors"
                return
            if not self._take_slot():
                report.stopped = "limit"
                return
            try:
                with self._in_flight:
                    task = client.next_task(self.project, view)
            except LabelStudioError as exc:
                self._give_back_slot()
                self._error(report, exc)
                consecutive += 1
                self.stop.wait(0.2 * consecutive)
                continue
            if task is None:
                self._give_back_slot()
                if empty < EMPTY_QUEUE_RETRIES and self._labels_left(person, report):
                    empty += 1
                    self.stop.wait(EMPTY_QUEUE_WAIT_S)
                    continue
                report.stopped = "queue empty"
                return
            empty = 0
            tid = int(task["id"])
            report.served += 1
            answer = person.profile.answer(TaskChoices(tid, self.options, self.truth.get(tid, {}),
                                                       self.items.get(tid)), rng)
            if self.time_scale > 0:
                self.stop.wait(answer.lead_time * self.time_scale)
            self.bucket.acquire(self.stop)
            try:
                result = [] if answer.labels is None else [
                    choice_region(self.config_xml, control, [label]) for control, label in answer.labels.items()]
                with self._in_flight:
                    created = client.create_annotation(tid, result, lead_time=answer.lead_time,
                                                       was_cancelled=answer.labels is None)
                if user_id((created or {}).get("completed_by")) not in (None, report.user):
                    raise LabelStudioError("POST", f"{client.url}/api/tasks/{tid}/annotations/", 200,
                                           f"the annotation was recorded for user {created.get('completed_by')}")
            except LabelStudioError as exc:
                self._give_back_slot()
                self._error(report, exc)
                consecutive += 1
                continue
            consecutive = 0
            report.lead_time_s = round(report.lead_time_s + answer.lead_time, 3)
            if answer.labels is None:
                report.skipped += 1
            else:
                report.submitted += 1
        report.stopped = report.stopped or "stopped"


# -- the command ----------------------------------------------------------------------------------------


class SetupFailed(click.ClickException):
    """The run could not start: exit status 3."""

    exit_code = 3


def _print_table(report: SimulationReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"crowdgate simulate: project {report.project}, {report.crowd}")
    numbers = ("user", "served", "answers", "skips", "errors", "lead s", "login s")
    for column in ("annotator", "kind", "user", "queue", "served", "answers", "skips", "errors", "lead s",
                   "login s", "stopped"):
        table.add_column(column, justify="right" if column in numbers else "left", no_wrap=True)
    for a in report.annotators:
        done = a.submitted + a.skipped
        table.add_row(a.name, a.kind, str(a.user or "-"), a.queue, str(a.served), str(a.submitted), str(a.skipped),
                      str(a.errors), f"{a.lead_time_s / done:.1f}" if done else "-", f"{a.login_s:.1f}", a.stopped)
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # a pipe or a file: wide enough for the table, not 80 columns
    console.print(table)
    totals = report.to_dict()
    console.print(f"{totals['submitted']} answers and {totals['skipped']} skips from {len(report.annotators)} "
                  f"annotators in {totals['elapsed_s']} s ({totals['annotations_per_s']} per s, rate limit "
                  f"{report.rate or 'none'}); {report.error_count} errors"
                  + (f" {totals['errors_by_kind']}" if report.errors else "")
                  + (f"; {report.unserved} crowd labels not served" if report.unserved else ""))
    for a in report.annotators:
        if a.last_error:
            console.print(f"  {a.email}: {a.last_error}", markup=False)


@click.command("simulate")
@click.argument("project", type=int)
@click.option("--replay", "replay", metavar="SET", help="replay a real crowd set (rte, temp, wsd): each worker a user "
              "answering with their real labels on the tasks whose data.item is one of their items")
@click.option("--profiles", metavar="MIX", help="synthetic annotators, e.g. diligent=5,sloppy=2,spammer=1,bot=1,"
              "colluding_pair=1 (a pair is two accounts)")
@click.option("--rate", type=float, default=5.0, show_default=True, metavar="PER_S",
              help="submissions per second across all annotators (token bucket); 0 for no limit")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="stop after N submissions (answers and skips) in all")
@click.option("--seed", type=int, default=0, show_default=True, help="fixes every answer, skip and lead time")
@click.option("--concurrency", type=click.IntRange(min=1), default=DEFAULT_CONCURRENCY, show_default=True,
              metavar="K", help="calls to Label Studio in flight at once, across all annotators")
@click.option("--present", type=click.IntRange(min=1), default=None, metavar="N",
              help=f"annotators at work at the same time (default: all of a synthetic crowd, at most {MAX_PRESENT}; "
              f"{REPLAY_WAVE} of a replayed one)")
@click.option("--truth", "truth_set", metavar="SET", help="synthetic annotators: take the true answer of tasks "
              "without gold from this crowd set's expert answers (matched by item id), not a latent draw")
@click.option("--item-field", default="item", show_default=True,
              help="the task data (or meta) key holding a crowd set's item id (--replay, --truth)")
@click.option("--time-scale", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="also wait lead_time x this before each submission (1 = real time; 0 = only the rate limit)")
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
def simulate(project: int, replay: str | None, profiles: str | None, rate: float, limit: int | None, seed: int,
             concurrency: int, present: int | None, truth_set: str | None, item_field: str, time_scale: float,
             as_json: bool) -> None:
    """Annotators who log in to Label Studio and work through their own queue of PROJECT.

    Each annotator is a Label Studio user with their own token who takes tasks from /next/ (their Data Manager
    tab when crowdgate routing gave them one) and submits as themselves, so Label Studio records them as
    completed_by and fires the webhook. Reads LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (an admin token).

    \b
    Examples:
      crowdgate simulate 3 --profiles diligent=5,sloppy=2,spammer=1,bot=1,colluding_pair=1 --rate 2
      crowdgate simulate 3 --replay rte --limit 500 --json

    Exit status: 0 all submitted, 1 errors were counted (see the report), 2 usage error, 3 could not start.
    """
    if (replay is None) == (profiles is None):
        raise click.UsageError("give exactly one of --replay SET or --profiles MIX")
    settings = Settings.from_env()
    if not settings.label_studio_url or not settings.label_studio_api_key:
        raise SetupFailed("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (an admin token) to simulate annotators")
    admin = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key, timeout=CALL_TIMEOUT_S)
    expert: dict[str, str] = {}
    if profiles is not None:
        try:
            people = synthetic_annotators(parse_mix(profiles))
        except ProfileMixError as exc:
            raise click.BadParameter(str(exc), param_hint="--profiles") from exc
        crowd = f"profiles {profiles}"
        if truth_set is not None:
            try:
                expert = dict(ReplayCrowd.load(truth_set).gold)
            except CrowdSetError as exc:
                raise SetupFailed(str(exc)) from exc
    else:
        try:
            real = ReplayCrowd.load(str(replay))
        except CrowdSetError as exc:
            raise SetupFailed(str(exc)) from exc
        crowd = f"replay {replay}"
        people = []  # built once the project's config names the control

    try:
        gold = ledger_gold(settings.redis_url, settings.key_prefix) if profiles is not None else None
        sim = Simulation(admin, project, people, crowd=crowd, rate=rate or None, limit=limit, seed=seed,
                         concurrency=concurrency, present=present, item_field=item_field, time_scale=time_scale,
                         expert=expert, gold_source=gold)
        if replay is not None:
            sim.annotators = _replay_people(sim, real, seed)
            sim.present = max(1, present or min(len(sim.annotators), REPLAY_WAVE) or 1)
        report = _run_with_progress(sim, as_json)
    except SimulationSetupError as exc:
        raise SetupFailed(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        _print_table(report)
    if report.error_count:
        raise SystemExit(1)


def _replay_people(sim: Simulation, real: ReplayCrowd, seed: int) -> list[SimulatedAnnotator]:
    """The replay crowd restricted to the project's items, its labels checked against the config's options."""
    sim.prepare()
    control = next(iter(sim.options))
    matched = set(sim.items.values()) & real.items
    if not matched:
        raise SimulationSetupError(f"no task of project {sim.project} carries an item of {real.name} in "
                                   f"data.{sim.item_field}: import the set's items with their ids there")
    crowd = real.restricted_to(matched)
    allowed = set(sim.options[control])
    strange = sorted({lab for answers in crowd.labels.values() for lab in answers.values()} - allowed)
    if strange:
        raise SimulationSetupError(f"{real.name} labels {strange} are not options of control {control!r} "
                                   f"({sorted(allowed)}): the project's config does not fit this crowd set")
    return replay_annotators(crowd, control, seed)


def _run_with_progress(sim: Simulation, quiet: bool) -> SimulationReport:
    """Run with a progress bar on a terminal (annotators finished), none otherwise."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        return sim.run()
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("annotators done", total=len(sim.annotators))
        sim.progress = lambda _report: bar.advance(job)
        return sim.run()
