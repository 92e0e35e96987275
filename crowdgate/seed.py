"""``crowdgate seed FOLDER TASKS``: create or update a Label Studio project from a label config folder, idempotently.

Two steps, so that bad input stops before anything is written:

1. :meth:`SeedPlan.build` reads and checks everything, touching no network: the config folder
   (:class:`core.config_folder.ConfigFolder`, its policy checked by :func:`routing.policy.parse_policy`), the
   tasks file (JSONL, JSON or CSV, :func:`core.config_folder.load_tasks_file`), the people CSV
   (``email,name,tier,cohort``; an optional ``password`` column) against the policy's tiers. It finds duplicate
   tasks (:class:`crowdgate.duplicates.NearDuplicates`), drops or merges them on request, and mixes the folder's
   gold items in at the policy's ``gold.share`` (at least the entry exam's ``exam_tasks`` when there is one).
   Every problem is a :class:`ConfigFolderError`: file, line, problem.
2. :class:`ProjectSeeder` compares that plan with what Label Studio and Redis hold and writes only the
   difference: the project (title, XML, guideline as ``expert_instruction``, ``maximum_annotations`` =
   ``overlap.min``), the tasks missing from it (imported in batches, with a progress bar), the ML backend (basic
   auth when ``CROWDGATE_ML_BASIC_AUTH_*`` are set), the webhook with its secret, the escalation projects of the
   tiers above the first labeling tier (Community), annotator accounts that can log in (Label Studio's invite
   sign-up), their tiers and cohorts, and the policy binding. A second run with the same input writes nothing.

Where the answers go: nowhere in Label Studio. Not in ``data`` (the labeling interface shows it) and not in
``meta`` either: Label Studio 1.23.2 sends a task's ``meta`` to the annotator with every ``/next/`` answer
(measured: tests/test_seed.py), so an annotator's browser or API key would read it. A gold answer goes to
crowdgate's own store, the ledger's gold hash that scoring and the exam offers read
(:meth:`qa_hooks.ledger.Ledger.set_meta_gold`), with a copy in the project's ``seeded`` hash from which a re-run
puts it back (after ``crowdgate rebuild-state``, which wipes scoring state, run ``crowdgate seed`` again). A gold
task looks like any other task: each seeded task carries only ``meta["crowdgate_seed"]``, a digest of its data,
by which a re-run recognises it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from core.config_folder import ConfigFolder, ConfigFolderError, load_tasks_file
from core.keys import Keys
from core.labelstudio import ENTERPRISE, LabelStudioClient
from crowdgate.duplicates import DuplicateGroup, NearDuplicates, task_fields
from routing.policy import Policy, parse_policy

__all__ = ["Person", "ProjectSeeder", "SeedPlan", "SeedReport", "read_people", "seed", "summary_text"]

SEED_FIELD = "crowdgate_seed"
SECRET_HEADER = "X-Crowdgate-Secret"
HOOK_PATH = "/hooks/labelstudio"
PEOPLE_COLUMNS = ("email", "name", "tier", "cohort")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


def data_key(data: dict[str, Any]) -> str:
    """A task's identity for re-runs: a digest of its data as canonical JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Person:
    """One row of the people CSV (``line`` is its line in the file)."""

    email: str
    name: str
    tier: str
    cohort: str
    password: str
    line: int


def read_people(path: Path, policy: Policy) -> list[Person]:
    """The annotators of ``path`` (CSV: email,name,tier,cohort[,password]); :class:`ConfigFolderError` at the
    first bad row: a missing column, an empty or malformed e-mail, a duplicate e-mail, a tier the policy lacks."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigFolderError(path, 0, f"cannot read the people file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigFolderError(path, 1, f"not UTF-8 text ({exc.reason})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in PEOPLE_COLUMNS if c not in header]
    if missing:
        raise ConfigFolderError(path, 1, f"the header lacks {', '.join(missing)} (expected columns "
                                f"{','.join(PEOPLE_COLUMNS)}[,password])")
    reader.fieldnames = header
    people: list[Person] = []
    seen: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            values = {k: (v or "").strip() for k, v in row.items() if k is not None}
            email = values.get("email", "").lower()
            if not email:
                raise ConfigFolderError(path, line, "empty e-mail")
            local, _, domain = email.partition("@")
            if not local or "." not in domain or " " in email:
                raise ConfigFolderError(path, line, f"not an e-mail address: {email!r}")
            if email in seen:
                raise ConfigFolderError(path, line, f"duplicate e-mail {email} (first on line {seen[email]})")
            seen[email] = line
            tier = values.get("tier", "")
            if tier and tier not in policy.tier_names:
                raise ConfigFolderError(path, line, f"unknown tier {tier!r}: the policy has "
                                        f"{', '.join(policy.tier_names)}")
            people.append(Person(email, values.get("name", ""), tier, values.get("cohort", ""),
                                 values.get("password", ""), line))
    except csv.Error as exc:
        raise ConfigFolderError(path, reader.line_num, f"malformed CSV: {exc}") from None
    return people


def _policy_check(text: str) -> Policy:
    return parse_policy(text)


def _gold_count(tasks: int, gold_items: int, share: float) -> int:
    """Gold tasks to mix in so that they are ``share`` of all tasks (capped at the gold items there are)."""
    if share <= 0 or gold_items == 0:
        return 0
    wanted = tasks if share >= 1 else round(share * tasks / (1 - share))
    return max(1, min(gold_items, wanted))


@dataclass
class SeedPlan:
    """What a seed run wants Label Studio to hold, built from the inputs alone (see the module docstring)."""

    folder: ConfigFolder
    policy: Policy
    title: str
    tasks: list[dict[str, Any]]
    gold_answers: dict[str, Any]
    people: list[Person]
    duplicates: list[DuplicateGroup]
    duplicate_lines: list[dict[str, Any]]
    dropped: int = 0
    merged: int = 0
    gold_mixed: int = 0

    @classmethod
    def build(cls, folder_path: Path, tasks_path: Path, *, people_path: Path | None = None, title: str | None = None,
              duplicates: str = "report", threshold: float = 0.7) -> SeedPlan:
        """Read and check every input; nothing here writes or calls the network."""
        folder = ConfigFolder.load(folder_path, check_policy=_policy_check)
        policy = parse_policy(folder.policy_text, origin=str(folder.path / "policy.yaml"))
        rows = load_tasks_file(tasks_path, folder.config)
        people = read_people(people_path, policy) if people_path is not None else []
        keys = sorted({key for t in rows for key in t["data"]})
        finder = NearDuplicates(threshold=threshold).fit([task_fields(t["data"], keys) for t in rows])
        line_of = _task_lines(tasks_path, len(rows))
        reported = [{"kind": g.kind, "similarity": g.similarity, "keep_line": line_of[g.keep],
                     "duplicate_lines": [line_of[i] for i in g.others]} for g in finder.groups_]
        kept, dropped, merged = list(rows), 0, 0
        if duplicates in ("drop", "merge"):
            others = {i: g for g in finder.groups_ for i in g.others}
            kept = []
            for i, task in enumerate(rows):
                if i in others:
                    continue
                group = next((g for g in finder.groups_ if g.keep == i), None)
                if group is not None and duplicates == "merge":
                    task = {**task, "meta": {**(task.get("meta") or {}),
                                             "crowdgate_merged": [rows[j]["data"] for j in group.others]}}
                kept.append(task)
            dropped = len(others) if duplicates == "drop" else 0
            merged = len(others) if duplicates == "merge" else 0
        tasks = [_seeded(t) for t in kept]
        # Gold items spread evenly through the import: /next/ serves tasks in id order, so gold at the end
        # would reach only the last annotators.
        count = _gold_count(len(tasks), len(folder.gold), policy.gold_share)
        if policy.qualification is not None:  # the entry exam serves its first exam_tasks tasks from gold
            count = max(count, min(len(folder.gold), policy.qualification.exam_tasks))
        gold = [_seeded({"data": g.data}) for g in folder.gold[:count]]
        answers = {data_key(g.data): g.answer for g in folder.gold[:count]}
        mixed: list[dict[str, Any]] = []
        step = len(tasks) / (count + 1) if count else 0
        positions = {round(step * (j + 1)): [] for j in range(count)}
        for j in range(count):
            positions[round(step * (j + 1))].append(gold[j])
        for i, task in enumerate(tasks):
            mixed.extend(positions.pop(i, []))
            mixed.append(task)
        for rest in positions.values():
            mixed.extend(rest)
        known: Counter[str] = Counter(t["meta"][SEED_FIELD] for t in mixed)
        if duplicates != "report" and any(n > 1 for n in known.values()):  # same data twice, gold and task
            mixed = list({t["meta"][SEED_FIELD]: t for t in mixed}.values())
        return cls(folder=folder, policy=policy, title=title or f"crowdgate: {folder.name}", tasks=mixed,
                   gold_answers=answers, people=people, duplicates=finder.groups_, duplicate_lines=reported,
                   dropped=dropped, merged=merged, gold_mixed=count)

    def project_settings(self) -> dict[str, Any]:
        return {"title": self.title, "label_config": self.folder.label_config,
                "expert_instruction": self.folder.guideline_html, "show_instruction": True,
                "maximum_annotations": self.policy.overlap.min}


def _seeded(task: dict[str, Any]) -> dict[str, Any]:
    meta = {**(task.get("meta") or {}), SEED_FIELD: data_key(task["data"])}
    meta.pop("gold", None)  # an answer in a tasks file's meta would reach annotators through /next/
    return {**{k: v for k, v in task.items() if k in ("data", "predictions")}, "meta": meta}


def _task_lines(path: Path, count: int) -> list[int]:
    """The line each task starts on, where the format has lines per task (JSONL, CSV); else its 1-based index."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix in (".jsonl", ".ndjson"):
        lines = [n for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    elif suffix == ".csv":
        reader = csv.reader(io.StringIO(text))
        next(reader, None)
        lines = []
        start = reader.line_num + 1
        for _ in reader:
            lines.append(start)
            start = reader.line_num + 1
    else:
        lines = list(range(1, count + 1))
    return (lines + list(range(len(lines) + 1, count + 1)))[:count]


# -- applying a plan --------------------------------------------------------------------------------------------


@dataclass
class SeedReport:
    """What a run did: per kind of thing, how many were created, updated or left unchanged."""

    project: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    merged: int = 0
    gold_mixed: int = 0
    escalation_projects: dict[str, int] = field(default_factory=dict)
    new_accounts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, kind: str, outcome: str, n: int = 1) -> None:
        self.counts.setdefault(kind, Counter())[outcome] += n

    @property
    def writes(self) -> int:
        return sum(c["created"] + c["updated"] for c in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = {k: {o: c.get(o, 0) for o in ("created", "updated", "unchanged")}
                          for k, c in self.counts.items()}
        data["duplicates_found"] = sum(len(g["duplicate_lines"]) for g in self.duplicates)
        return data


@dataclass
class ProjectSeeder:
    """Applies a :class:`SeedPlan` to one Label Studio (admin key) and one Redis (routing state and audit)."""

    client: LabelStudioClient
    connection: Any
    prefix: str = "cg"
    crowdgate_url: str = ""
    webhook_secret: str = ""
    ml_basic_auth: tuple[str, str] | None = None
    batch_size: int = 500
    progress: bool = True

    @property
    def _keys(self) -> Keys:
        return Keys(self.prefix)

    def run(self, plan: SeedPlan) -> SeedReport:
        from routing.audit import AuditLog
        from routing.state import RoutingState

        state, audit = RoutingState(self.connection, self.prefix), AuditLog(self.connection, self.prefix)
        report = SeedReport(duplicates=plan.duplicate_lines, dropped=plan.dropped, merged=plan.merged,
                            gold_mixed=plan.gold_mixed)
        projects = self.client.projects()
        project = self._project(plan, projects, report)
        report.project = project
        self._policy(plan, project, state, audit, report)
        self._tasks(plan, project, report)
        if self.crowdgate_url:
            self._ml_backend(project, report)
            self._webhook(project, report)
        else:
            report.notes.append("no crowdgate URL (--crowdgate-url or CROWDGATE_PUBLIC_URL): the ML backend and "
                                "the webhook were not connected")
        self._escalation_projects(plan, project, projects, state, audit, report)
        self._people(plan, project, state, audit, report)
        return report

    # -- the project and its policy ---------------------------------------------------------------------------

    def _project(self, plan: SeedPlan, projects: list[dict[str, Any]], report: SeedReport) -> int:
        wanted = plan.project_settings()
        found = [p for p in projects if p.get("title") == plan.title]
        if not found:
            project = self.client.create_project(**wanted)
            self._remember(project, project, wanted, self.client.project(project))
            report.count("project", "created")
            return project
        project = int(min(found, key=lambda p: int(p["id"]))["id"])
        report.count("project", self._settle(project, project, wanted))
        return project

    def _settle(self, source: int, project: int, wanted: dict[str, Any]) -> str:
        """Update the settings of ``project`` that differ from ``wanted``: "updated" or "unchanged"."""
        current = self.client.project(project)
        changed = {k: v for k, v in wanted.items() if not self._same(source, project, k, v, current.get(k))}
        if not changed:
            return "unchanged"
        stored = self.client.update_project(project, **changed)
        self._remember(source, project, changed, stored if isinstance(stored, dict) else self.client.project(project))
        return "updated"

    def _same(self, source: int, project: int, name: str, wanted: Any, current: Any) -> bool:
        """Whether Label Studio holds ``wanted``: equal, or what it kept of the very value seed last sent (it
        sanitises ``expert_instruction``'s HTML, for one)."""
        if current == wanted:
            return True
        raw = self.connection.hget(self._keys.seeded(source), f"{project}:{name}")
        return raw is not None and json.loads(raw) == [_digest(wanted), _digest(current)]

    def _remember(self, source: int, project: int, sent: dict[str, Any], stored: dict[str, Any]) -> None:
        self.connection.hset(self._keys.seeded(source), mapping={
            f"{project}:{k}": json.dumps([_digest(v), _digest(stored.get(k))]) for k, v in sent.items()})

    def _policy(self, plan: SeedPlan, project: int, state: Any, audit: Any, report: SeedReport) -> None:
        origin = str((plan.folder.path / "policy.yaml").resolve())
        bound = state.policy_bound(project)
        if bound and state.policy_source(project)[0] == plan.folder.policy_text:
            report.count("policy", "unchanged")
            return
        state.set_policy(project, plan.folder.policy_text, origin=origin)
        audit.record("action", "set_policy", project, reason=f"policy {origin} bound by crowdgate seed",
                     evidence={"origin": origin, "tiers": list(plan.policy.tier_names)})
        report.count("policy", "updated" if bound else "created")

    # -- tasks --------------------------------------------------------------------------------------------------

    def _tasks(self, plan: SeedPlan, project: int, report: SeedReport) -> None:
        existing = {(t.get("meta") or {}).get(SEED_FIELD): int(t["id"]) for t in self.client.tasks(project)}
        missing = [t for t in plan.tasks if t["meta"][SEED_FIELD] not in existing]
        for task in plan.tasks:
            if task["meta"][SEED_FIELD] in existing:
                report.count("gold" if task["meta"][SEED_FIELD] in plan.gold_answers else "tasks", "unchanged")
        with tqdm(total=len(missing), desc="importing tasks", unit="task", disable=not self.progress or None,
                  file=sys.stderr) as bar:
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start:start + self.batch_size]
                ids = self.client.import_tasks(project, batch)
                if len(ids) == len(batch):
                    existing.update({t["meta"][SEED_FIELD]: i for t, i in zip(batch, ids, strict=True)})
                bar.update(len(batch))
        if missing and any(t["meta"][SEED_FIELD] not in existing for t in missing):  # ids not returned: list
            existing = {(t.get("meta") or {}).get(SEED_FIELD): int(t["id"]) for t in self.client.tasks(project)}
        gold = sum(t["meta"][SEED_FIELD] in plan.gold_answers for t in missing)
        if gold:
            report.count("gold", "created", gold)
        if len(missing) - gold:
            report.count("tasks", "created", len(missing) - gold)
        self._gold_answers(plan, project, existing, report)

    def _gold_answers(self, plan: SeedPlan, project: int, task_of: dict[str, int], report: SeedReport) -> None:
        """Each gold task's answer in crowdgate's store (scoring reads it there) and in the seed record."""
        from qa_hooks.ledger import Ledger

        if not plan.gold_answers:
            return
        ledger = Ledger(self.connection, self.prefix)
        wanted = {task_of[key]: answer for key, answer in plan.gold_answers.items()}
        stored = self.connection.hmget(self._keys.meta_gold(project), list(wanted))
        kept = self.connection.hmget(self._keys.seeded(project), [f"gold:{t}" for t in wanted])
        pipe = self.connection.pipeline()
        for (task, answer), have, copy in zip(wanted.items(), stored, kept, strict=True):
            text = json.dumps(answer)
            if have is not None and json.loads(have) == answer and copy is not None and copy.decode() == text:
                report.count("gold_answers", "unchanged")
                continue
            ledger.set_meta_gold(project, task, answer, pipe)
            pipe.hset(self._keys.seeded(project), f"gold:{task}", text)
            report.count("gold_answers", "created" if have is None else "updated")
        pipe.execute()

    # -- crowdgate's connections --------------------------------------------------------------------------------

    def _ml_backend(self, project: int, report: SeedReport) -> None:
        url = self.crowdgate_url.rstrip("/")
        backends = [b for b in self.client.ml_backends(project) if str(b.get("url", "")).rstrip("/") == url]
        auth_user = self.ml_basic_auth[0] if self.ml_basic_auth else None
        if any((b.get("auth_method") == "BASIC_AUTH") == bool(auth_user)
               and (not auth_user or b.get("basic_auth_user") == auth_user) for b in backends):
            report.count("ml_backend", "unchanged")
            return
        for backend in backends:  # the wrong credentials: replace it
            self.client.request("DELETE", f"/api/ml/{int(backend['id'])}")
        self.client.connect_ml_backend(project, url, basic_auth=self.ml_basic_auth)
        report.count("ml_backend", "updated" if backends else "created")

    def _webhook(self, project: int, report: SeedReport) -> None:
        url = f"{self.crowdgate_url.rstrip('/')}{HOOK_PATH}"
        headers = {SECRET_HEADER: self.webhook_secret}
        hooks = [h for h in self.client.webhooks(project) if str(h.get("url", "")).rstrip("/") == url]
        if any(h.get("is_active", True) and h.get("send_payload", True) and h.get("send_for_all_actions", True)
               and (h.get("headers") or {}) == headers for h in hooks):
            report.count("webhook", "unchanged")
        elif hooks:
            self.client.enable_webhook(int(hooks[0]["id"]), headers)
            report.count("webhook", "updated")
        else:
            self.client.create_webhook(project, url, headers)
            report.count("webhook", "created")

    def _escalation_projects(self, plan: SeedPlan, project: int, projects: list[dict[str, Any]], state: Any,
                             audit: Any, report: SeedReport) -> None:
        """The escalation project of every tier above the first labeling tier (Community: no assignment API,
        so an escalated task goes to its tier's own project); Enterprise assigns in place and needs none."""
        policy = plan.policy
        tiers = [t.name for t in policy.tiers[policy.first_labeling_index + 1:]]
        if not tiers or self.client.edition(project) == ENTERPRISE:
            return
        ids = {int(p["id"]) for p in projects}
        hooks = [h for h in self.client.webhooks(project)
                 if str(h.get("url", "")).rstrip("/").endswith(HOOK_PATH)] if self.crowdgate_url else []
        for tier in tiers:
            linked = state.tier_project(project, tier)
            if linked is not None and linked in ids:
                report.escalation_projects[tier] = linked
                report.count("escalation_projects", self._settle(project, linked, {
                    "label_config": plan.folder.label_config, "expert_instruction": plan.folder.guideline_html}))
                continue
            title = f"{plan.title}"[:30] + f" · {tier}"[:19]
            made = self.client.create_project(
                title, plan.folder.label_config, maximum_annotations=1, show_collab_predictions=False,
                expert_instruction=plan.folder.guideline_html, show_instruction=True,
                description=f"crowdgate: tasks escalated to {tier} from project {project}; answers are written "
                            "back there")
            self._remember(project, made, {"label_config": plan.folder.label_config,
                                           "expert_instruction": plan.folder.guideline_html}, self.client.project(made))
            for hook in hooks[:1]:
                self.client.create_webhook(made, hook["url"], hook.get("headers") or {})
            if linked is not None:
                state.unlink_tier_project(project, tier, linked)
            state.link_tier_project(project, tier, made)
            audit.record("action", "create_escalation_project", project, None, [],
                         f"escalation project {made} for {tier} (crowdgate seed)",
                         {"tier_project": made, "tier": tier, "webhook": bool(hooks)})
            report.escalation_projects[tier] = made
            report.count("escalation_projects", "created")

    # -- people -------------------------------------------------------------------------------------------------

    def _people(self, plan: SeedPlan, project: int, state: Any, audit: Any, report: SeedReport) -> None:
        if not plan.people:
            return
        users = {str(u.get("email", "")).lower(): u for u in self.client.users()}
        ids: dict[str, int] = {}
        for person in tqdm(plan.people, desc="annotator accounts", unit="user", file=sys.stderr,
                           disable=not self.progress or None):
            first, _, last = person.name.partition(" ")
            user = users.get(person.email)
            if user is None:
                password = person.password or secrets.token_urlsafe(12)
                made = self.client.invite_annotator(person.email, password)
                ids[person.email] = made.id
                if person.name:
                    self.client.update_user(made.id, first_name=first, last_name=last)
                report.count("users", "created")
                report.new_accounts.append({"email": person.email, "id": made.id,
                                            **({} if person.password else {"password": password})})
                continue
            ids[person.email] = int(user["id"])
            if person.name and (user.get("first_name", ""), user.get("last_name", "")) != (first, last):
                self.client.update_user(int(user["id"]), first_name=first, last_name=last)
                report.count("users", "updated")
            else:
                report.count("users", "unchanged")
        tiers, cohorts = state.tiers(project), state.cohorts(project)
        for person in plan.people:
            uid = ids[person.email]
            if person.tier and tiers.get(uid) != person.tier:
                version = state.set_tier(project, uid, person.tier)
                audit.record("action", "set_tier", project, None, [uid], "tier from the people CSV (crowdgate seed)",
                             {"from": tiers.get(uid), "to": person.tier, "version": version})
                report.count("tiers", "updated" if uid in tiers else "created")
            elif person.tier:
                report.count("tiers", "unchanged")
        changed = {ids[p.email]: p.cohort for p in plan.people if p.cohort and cohorts.get(ids[p.email]) != p.cohort}
        state.set_cohorts(project, changed)
        report.count("cohorts", "updated", len(changed))
        report.count("cohorts", "unchanged", sum(1 for p in plan.people if p.cohort) - len(changed))


# -- the command ------------------------------------------------------------------------------------------------


def summary_text(report: SeedReport) -> str:
    """The report as the lines an admin reads: counts per kind, duplicate groups, new accounts, notes."""
    lines = [f"project {report.project}"]
    for kind, counts in report.as_dict()["counts"].items():
        lines.append(f"  {kind:20s} created {counts['created']:5d}  updated {counts['updated']:5d}  "
                     f"unchanged {counts['unchanged']:5d}")
    found = sum(len(g["duplicate_lines"]) for g in report.duplicates)
    what = f"dropped {report.dropped}" if report.dropped else f"merged {report.merged}" if report.merged else \
        "imported anyway (--drop-duplicates or --merge-duplicates to change that)" if found else ""
    lines.append(f"  duplicates: {found} in {len(report.duplicates)} groups{'; ' + what if what else ''}")
    for group in report.duplicates[:20]:
        lines.append(f"    line {group['keep_line']} ~ lines {group['duplicate_lines']} ({group['kind']}, "
                     f"Jaccard {group['similarity']})")
    if len(report.duplicates) > 20:
        lines.append(f"    ... {len(report.duplicates) - 20} more groups (--json lists them all)")
    lines.append(f"  gold tasks mixed in: {report.gold_mixed}")
    for tier, tier_project in report.escalation_projects.items():
        lines.append(f"  escalation project for {tier}: {tier_project}")
    for account in report.new_accounts:
        lines.append(f"  new account {account['email']} (user {account['id']})"
                     + (f", password {account['password']}" if "password" in account else ""))
    lines.extend(f"  note: {note}" for note in report.notes)
    return "\n".join(lines)


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.argument("tasks", type=click.Path(path_type=Path))
@click.option("--annotators", "people", type=click.Path(path_type=Path), default=None,
              help="CSV of annotators: email,name,tier,cohort[,password]; accounts that can log in are made for "
                   "new e-mails (a password is generated and printed when the column is empty).")
@click.option("--project-title", default=None, help="default: 'crowdgate: <folder name>'; the project is found "
              "again by its title on a re-run.")
@click.option("--drop-duplicates", "duplicates", flag_value="drop", help="import one task of each duplicate group.")
@click.option("--merge-duplicates", "duplicates", flag_value="merge",
              help="import one task of each group, the others' data kept in its meta.crowdgate_merged.")
@click.option("--near-threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.7, show_default=True,
              help="Jaccard similarity of 5-character shingles, in every data field, at which two tasks are "
                   "near-duplicates (bench/duplicates.py on RTE: 0.7 groups 86% of one-word edits, no task that "
                   "only shares its text).")
@click.option("--crowdgate-url", default=None,
              help="crowdgate's web app as Label Studio reaches it, for the ML backend and the webhook "
                   "(default: $CROWDGATE_PUBLIC_URL; neither: not connected).")
@click.option("--batch-size", type=click.IntRange(1, 10000), default=500, show_default=True,
              help="tasks per import call.")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON instead of the summary.")
def seed(folder: Path, tasks: Path, people: Path | None, project_title: str | None, duplicates: str | None,
         near_threshold: float, crowdgate_url: str | None, batch_size: int, as_json: bool) -> None:
    """Create or update a Label Studio project from a label config FOLDER and a TASKS file (JSONL, JSON or CSV).

    Every input is checked before anything is written (a problem is reported as file:line: problem, exit 1).
    Then it creates or updates the project with its guideline, imports the tasks it lacks with the folder's gold
    items mixed in at the policy's gold share (answers in crowdgate's store, never in Label Studio), reports
    near-duplicate tasks, connects crowdgate's ML backend and webhook, creates the escalation projects and the annotator
    accounts with their tiers and cohorts, and binds the policy. Running it again changes nothing that is
    already right.

    Example: crowdgate seed label_configs/rte tasks.jsonl --annotators people.csv
    """
    import redis

    from core.settings import Settings, use

    try:
        plan = SeedPlan.build(folder, tasks, people_path=people, title=project_title,
                              duplicates=duplicates or "report", threshold=near_threshold)
    except ConfigFolderError as exc:
        raise click.ClickException(f"{exc} (nothing was written)") from exc
    settings = use(Settings.from_env())
    url = crowdgate_url if crowdgate_url is not None else settings.public_url
    if url and not settings.webhook_secret:
        raise click.ClickException("CROWDGATE_WEBHOOK_SECRET is not set: the webhook needs the secret crowdgate's "
                                   "receiver checks (nothing was written)")
    connection = redis.Redis.from_url(settings.redis_url)
    connection.ping()
    client = LabelStudioClient.from_settings(settings)
    client.whoami()  # reachable, and the key works, before the first write
    seeder = ProjectSeeder(client, connection, settings.key_prefix, crowdgate_url=url or "",
                           webhook_secret=settings.webhook_secret,
                           ml_basic_auth=(settings.ml_basic_auth_user, settings.ml_basic_auth_password)
                           if settings.ml_basic_auth_user and settings.ml_basic_auth_password else None,
                           batch_size=batch_size, progress=not as_json)
    report = seeder.run(plan)
    click.echo(json.dumps(report.as_dict(), indent=2, default=str) if as_json else summary_text(report))
