"""Scores in Redis: gold answers, per-task agreement, and every annotator's running record.

The keys (gold answers, task scores, contributions, annotators' running sums and confusion counts, flags) are
listed in :mod:`core.keys`, which builds every one of them.

Rescoring a task computes its contributions afresh and adds only the difference to each annotator's sums, under
a version check on the task, so the work per event is proportional to the annotations on that task and
two workers rescoring the same task cannot count it twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from core.keys import Keys
from qa_hooks.fit import ProjectFit, load_fit
from qa_hooks.scoring import (
    PRIOR_ALPHA,
    PRIOR_BETA,
    Contribution,
    TaskScore,
    beta_interval,
    categorical,
    reliability_mean,
    score_task,
)
from qa_hooks.signals import Flag, annotator_flags, class_prior, given_counts
from qa_hooks.store import LuaScript, SubmissionStore, decode, pairs_to_row

_STAT_FIELDS = ("gold_n", "gold_sum", "peer_n", "peer_sum", "pair_n", "pair_sum")


@dataclass(frozen=True)
class Reliability:
    """An annotator's record in one project."""

    annotator: int
    mean: float  # posterior mean accuracy, gold and peer evidence together
    low: float  # 90% credible interval
    high: float
    evidence: float  # gold answers + tasks judged by peers
    gold_n: int
    gold_accuracy: float | None  # mean similarity to gold
    gold_low: float | None  # 90% interval of the Beta posterior on gold alone
    gold_high: float | None
    peer_n: int
    peer_agreement: float | None  # mean raw similarity with peers
    confusion: dict[str, dict[str, float]] = field(default_factory=dict)  # true -> given -> count

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def accuracy_posterior(stats: dict[str, float]) -> tuple[float, float]:
    """Beta(alpha, beta) over an annotator's accuracy: the prior plus gold and peer evidence."""
    gold_n, gold_sum = stats.get("gold_n", 0.0), stats.get("gold_sum", 0.0)
    peer_n, peer_sum = stats.get("peer_n", 0.0), stats.get("peer_sum", 0.0)
    return PRIOR_ALPHA + gold_sum + peer_sum, PRIOR_BETA + (gold_n - gold_sum) + (peer_n - peer_sum)


def reliability_from_stats(annotator: int, stats: dict[str, float],
                           confusion: dict[str, float] | None = None) -> Reliability:
    gold_n, gold_sum = stats.get("gold_n", 0.0), stats.get("gold_sum", 0.0)
    peer_n = stats.get("peer_n", 0.0)
    pair_n, pair_sum = stats.get("pair_n", 0.0), stats.get("pair_sum", 0.0)
    alpha, beta = accuracy_posterior(stats)
    low, high = beta_interval(alpha, beta)
    gold_low = gold_high = None
    if gold_n >= 1:
        gold_low, gold_high = beta_interval(1.0 + gold_sum, 1.0 + gold_n - gold_sum)
    matrix: dict[str, dict[str, float]] = {}
    for key, count in (confusion or {}).items():
        true_class, _, given = key.partition("\t")
        if count > 1e-9:
            matrix.setdefault(true_class, {})[given] = round(count, 6)
    return Reliability(
        annotator=annotator,
        mean=reliability_mean(alpha, beta),
        low=low,
        high=high,
        evidence=gold_n + peer_n,
        gold_n=round(gold_n),
        gold_accuracy=gold_sum / gold_n if gold_n >= 1 else None,
        gold_low=gold_low,
        gold_high=gold_high,
        peer_n=round(peer_n),
        peer_agreement=pair_sum / pair_n if pair_n >= 1 else None,
        confusion=matrix,
    )


def with_fit(rels: dict[int, Reliability], fit: ProjectFit | None) -> dict[int, Reliability]:
    """Records whose accuracy comes from the project's Dawid–Skene refit where it has seen the annotator: the
    mean and 90% interval of Beta(prior + expected correct labels, prior + expected wrong ones) under the fit
    (gold clamped), and its expected (true, given) counts as the confusion; evidence and gold figures unchanged."""
    if fit is None:
        return rels
    out = {}
    for annotator, rel in rels.items():
        belief = fit.accuracy(annotator, PRIOR_ALPHA, PRIOR_BETA)
        if belief is None:
            out[annotator] = rel
            continue
        low, high = beta_interval(*belief)
        out[annotator] = Reliability(**{**rel.__dict__, "mean": reliability_mean(*belief), "low": low, "high": high,
                                        "confusion": fit.confusion_counts(annotator)})
    return out


def _floats(raw: dict[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items()}


# One round trip reads everything a task's rescoring needs. KEYS: the task's score, submission index and
# contributions, the project, its annotation gold and meta gold, its shared trimmed results; ARGV: the task, then
# the (head, tail) parts of a submission's and of an annotator's stats key (Keys.*_parts). Each submission comes
# as its unique id and record (HGETALL's pairs, either format), with the shared results its trimmed records
# name. (Those per-element keys are built inside the script, which suits a single Redis, crowdgate's deployment;
# a Redis Cluster would need hash tags per project.)
_READ_TASK = """
local task = ARGV[1]
local version = redis.call('HGET', KEYS[1], 'version') or false
local uids = redis.call('ZRANGE', KEYS[2], 0, -1)
local subs, annotators, seen, shared = {}, {}, {}, {}
for _, uid in ipairs(uids) do
  local row = redis.call('HGETALL', ARGV[2] .. uid .. ARGV[3])
  if #row > 0 then
    table.insert(subs, {uid, row})
    local fields = {}
    for i = 1, #row, 2 do fields[row[i]] = row[i + 1] end
    local annotator = fields['annotator']
    if not seen[annotator] then seen[annotator] = true; table.insert(annotators, annotator) end
    if fields['rk'] and not fields['json'] then
      table.insert(shared, fields['rk'])
      table.insert(shared, redis.call('HGET', KEYS[7], fields['rk']) or '')
    end
  end
end
local contrib = redis.call('HGETALL', KEYS[3])
for i = 1, #contrib, 2 do
  if not seen[contrib[i]] then seen[contrib[i]] = true; table.insert(annotators, contrib[i]) end
end
local stats = {}
for i, a in ipairs(annotators) do
  stats[i] = redis.call('HMGET', ARGV[4] .. a .. ARGV[5],
                        'gold_n', 'gold_sum', 'peer_n', 'peer_sum', 'pair_n', 'pair_sum')
end
return {version, redis.call('HMGET', KEYS[4], 'label_config', 'control_weights'),
        redis.call('HGET', KEYS[5], task) or false,
        redis.call('HGET', KEYS[6], task) or false,
        contrib, subs, annotators, stats, shared}
"""

# Apply a rescoring's writes only if nobody rescored the task since it was read (optimistic locking).
_COMMIT = """
local version = redis.call('HGET', ARGV[1], 'version') or '0'
if version ~= ARGV[2] then return 0 end
for _, op in ipairs(cjson.decode(ARGV[3])) do
  if op[1] == 'incr' then redis.call('HINCRBYFLOAT', op[2], op[3], op[4])
  elseif op[1] == 'set' then redis.call('HSET', op[2], op[3], op[4])
  else redis.call('HDEL', op[2], op[3]) end
end
redis.call('HINCRBY', ARGV[1], 'version', 1)
return 1
"""


class Ledger:
    def __init__(self, connection: redis.Redis, prefix: str = "cg") -> None:
        self.redis = connection
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.read_script = LuaScript(_READ_TASK)
        self._commit = LuaScript(_COMMIT)

    # -- gold -------------------------------------------------------------------------------------------

    def set_meta_gold(self, project: int, task: int, gold: Any, pipe: Pipeline | None = None) -> None:
        """Gold from a task's ``meta["gold"]``: a result list, or a label for single-choice configs."""
        (pipe or self.redis).hset(self.keys.meta_gold(project), task, json.dumps(gold))

    def gold_tasks(self, project: int) -> list[int]:
        """Tasks with a gold answer, from a ground-truth annotation or ``meta["gold"]``."""
        pipe = self.redis.pipeline(transaction=False)
        self.queue_gold_tasks(pipe, project)
        return self.gold_tasks_from(*pipe.execute())

    def queue_gold_tasks(self, pipe: Pipeline, project: int) -> None:
        """Queue the reads of :meth:`gold_tasks` (two replies); decode them with :meth:`gold_tasks_from`."""
        pipe.hkeys(self.keys.annotation_gold(project))
        pipe.hkeys(self.keys.meta_gold(project))

    @staticmethod
    def gold_tasks_from(marked: list[bytes], meta: list[bytes]) -> list[int]:
        return sorted({int(t) for t in marked} | {int(t) for t in meta})

    def gold(self, project: int, task: int, label_config: str | None = None) -> list[dict[str, Any]] | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.annotation_gold(project), task)
        pipe.hget(self.keys.meta_gold(project), task)
        return self._gold_from(*pipe.execute(), label_config)

    @staticmethod
    def _gold_from(annotation: bytes | None, meta: bytes | None, label_config: str | None):
        if annotation:
            return json.loads(annotation)["result"]
        if not meta:
            return None
        value = json.loads(meta)
        if isinstance(value, list) and all(isinstance(r, dict) for r in value):
            return value
        cat = categorical(label_config) if label_config else None
        if cat is None:
            return None
        labels = value if isinstance(value, list) else [value]
        return [{"from_name": cat.control, "type": "choices", "value": {"choices": [str(v) for v in labels]}}]

    # -- rescoring --------------------------------------------------------------------------------------

    def queue_read(self, pipe: Pipeline, project: int, task: int) -> None:
        """Queue the read of a task's state on ``pipe``; hand its reply to :meth:`rescore` as ``state``."""
        self.read_script.queue(pipe, *self._read_task_keys(project, task))

    def _read_task_keys(self, project: int, task: int) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the task read script."""
        k = self.keys
        keys = [k.task_score(project, task), k.task_submissions(project, task), k.task_contributions(project, task),
                k.project_info(project), k.annotation_gold(project), k.meta_gold(project), k.results(project)]
        return keys, [task, *k.submission_parts(project), *k.annotator_stats_parts(project)]

    def rescore(self, project: int, task: int, state: list[Any] | None = None,
                max_attempts: int = 20) -> TaskScore | None:
        """Recompute a task's scores and move the difference into its annotators' records."""
        for _ in range(max_attempts):
            if state is None:
                state = self.read_script(self.redis, *self._read_task_keys(project, task))
            outcome = self._rescore_from(state, project, task)
            if outcome is None:
                return None
            score, ops, version = outcome
            if self._commit(self.redis, [], [self.keys.task_score(project, task), version, json.dumps(ops)]):
                return score
            state = None  # someone rescored it meanwhile: read again
        raise RuntimeError(f"task {task} of project {project} kept changing while being rescored")

    def _rescore_from(self, state: list[Any], project: int, task: int):
        (version, (config_raw, weights_raw), gold_annotation, gold_meta, old_raw, subs_raw, annotators, stats_raw,
         shared_raw) = state
        if not config_raw:
            return None  # no label config known yet: the project's first event carries it
        label_config = config_raw.decode()
        control_weights = json.loads(weights_raw) if weights_raw else None
        old = {int(old_raw[i]): Contribution.from_dict(json.loads(old_raw[i + 1])) for i in range(0, len(old_raw), 2)}
        shared = pairs_to_row(shared_raw)
        submissions = [decode(project, uid.decode(), pairs_to_row(row), shared) for uid, row in subs_raw]
        # The gold cache follows the task's ground-truth annotation (latest wins; unmarked or deleted: gone).
        marked = [s for s in submissions if s.ground_truth and not s.was_cancelled]
        gold_value = None
        if marked:
            latest = max(marked, key=lambda s: s.updated_at)
            gold_value = json.dumps({"uid": latest.unique_id, "result": latest.result}).encode()
        gold = self._gold_from(gold_value, gold_meta, label_config)

        beliefs = {}
        annotator_ids = [int(a) for a in annotators]
        for annotator, values in zip(annotator_ids, stats_raw, strict=True):
            stats = {k: float(v) for k, v in zip(_STAT_FIELDS, values, strict=True) if v is not None}
            # Judge peers by their record *without* this task, so a task never vouches for itself.
            if annotator in old:
                stats = _subtract(stats, old[annotator])
            beliefs[annotator] = reliability_mean(*accuracy_posterior(stats))

        score = score_task(submissions, gold, label_config, control_weights, beliefs,
                           fit=load_fit(self.redis, self.prefix, project))

        k = self.keys
        contrib_key = k.task_contributions(project, task)
        ops: list[list[str]] = []
        if gold_value != gold_annotation:
            if gold_value is None:
                ops.append(["del", k.annotation_gold(project), str(task)])
            else:
                ops.append(["set", k.annotation_gold(project), str(task), gold_value.decode()])
        for annotator in annotator_ids:
            new = score.contributions.get(annotator)
            before = old.get(annotator, Contribution())
            after = new or Contribution()
            stats_key = k.annotator_stats(project, annotator)
            for name, delta in _deltas(before, after).items():
                if abs(delta) > 1e-12:
                    ops.append(["incr", stats_key, name, repr(delta)])
            confusion_key = k.annotator_confusion(project, annotator)
            for cell in set(before.confusion) | set(after.confusion):
                delta = after.confusion.get(cell, 0.0) - before.confusion.get(cell, 0.0)
                if abs(delta) > 1e-12:
                    ops.append(["incr", confusion_key, cell, repr(delta)])
            if new is None:
                if annotator in old:
                    ops.append(["del", contrib_key, str(annotator)])
            else:
                ops.append(["set", contrib_key, str(annotator), json.dumps(new.to_dict(), separators=(",", ":"))])
        score_key = k.task_score(project, task)
        fields = {"n": str(len(score.contributions)),
                  "agreement": "" if score.agreement is None else repr(score.agreement),
                  "consensus": score.consensus or "",
                  "confidence": "" if score.confidence is None else repr(score.confidence),
                  "consensus_share": "" if score.consensus_share is None else repr(score.consensus_share),
                  "consensus_reached": "1" if score.consensus_reached else "0",
                  "posterior": json.dumps(score.posterior)}
        ops.extend(["set", score_key, name, value] for name, value in fields.items())
        return score, ops, version or b"0"

    # -- reads ------------------------------------------------------------------------------------------

    def reliability(self, project: int, annotator: int) -> Reliability:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.annotator_stats(project, annotator))
        pipe.hgetall(self.keys.annotator_confusion(project, annotator))
        stats, confusion = pipe.execute()
        rel = reliability_from_stats(annotator, _floats(stats), _floats(confusion))
        return with_fit({annotator: rel}, load_fit(self.redis, self.prefix, project))[annotator]

    def reliabilities(self, project: int, annotators: list[int]) -> dict[int, Reliability]:
        pipe = self.redis.pipeline(transaction=False)
        for annotator in annotators:
            pipe.hgetall(self.keys.annotator_stats(project, annotator))
            pipe.hgetall(self.keys.annotator_confusion(project, annotator))
        raw = pipe.execute()
        return self.with_fit(project, self.reliabilities_from(annotators, raw))

    def with_fit(self, project: int, rels: dict[int, Reliability]) -> dict[int, Reliability]:
        """``rels`` with the accuracy of the project's refit where it has one (:func:`with_fit`)."""
        return with_fit(rels, load_fit(self.redis, self.prefix, project)) if rels else rels

    def refresh_flags(self, project: int, store: SubmissionStore) -> dict[int, list[Flag]]:
        """Evaluate every annotator's low-effort and fraud signals; stores them and returns the flagged ones."""
        annotators = store.annotators(project)
        records = self.reliabilities(project, annotators)
        fit = load_fit(self.redis, self.prefix, project)
        # The truth's class shares: the refit's class prior once there is one.
        prior = fit.class_prior if fit is not None else class_prior([r.confusion for r in records.values()])
        project_times = store.lead_times(project)
        pipe = self.redis.pipeline(transaction=False)
        for annotator in annotators:
            pipe.lrange(self.keys.annotator_lead_times(project, annotator), 0, -1)
        times = {a: [float(v) for v in raw] for a, raw in zip(annotators, pipe.execute(), strict=True)}
        flagged: dict[int, list[Flag]] = {}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.annotator_flags(project))
        for annotator, record in records.items():
            flags = annotator_flags(
                lead_times=times[annotator], project_lead_times=project_times, given=given_counts(record.confusion),
                class_prior=prior, gold_n=record.gold_n, gold_high=record.gold_high, evidence=record.evidence,
                reliability_high=record.high,
            )
            if flags:
                flagged[annotator] = flags
                pipe.hset(self.keys.annotator_flags(project), annotator, json.dumps([f.__dict__ for f in flags]))
        pipe.execute()
        return flagged

    # Queue/decode pairs: routing queues the reads of many tasks and annotators on one pipeline, then decodes.

    def queue_gold(self, pipe: Pipeline, project: int, task: int) -> None:
        """Queue the read of a task's gold (two replies); decode them with :meth:`gold_from`."""
        pipe.hget(self.keys.annotation_gold(project), task)
        pipe.hget(self.keys.meta_gold(project), task)

    @classmethod
    def gold_from(cls, annotation: bytes | None, meta: bytes | None,
                  label_config: str | None = None) -> list[dict[str, Any]] | None:
        return cls._gold_from(annotation, meta, label_config)

    def queue_reliabilities(self, pipe: Pipeline, project: int, annotators: list[int]) -> None:
        """Queue the reads of annotators' records (two replies each); decode with :meth:`reliabilities_from`."""
        for annotator in annotators:
            pipe.hgetall(self.keys.annotator_stats(project, annotator))
            pipe.hgetall(self.keys.annotator_confusion(project, annotator))

    @staticmethod
    def reliabilities_from(annotators: list[int], raw: list[dict[bytes, bytes]]) -> dict[int, Reliability]:
        return {a: reliability_from_stats(a, _floats(raw[2 * i]), _floats(raw[2 * i + 1]))
                for i, a in enumerate(annotators)}

    def queue_all_flags(self, pipe: Pipeline, project: int) -> None:
        """Queue the read of every annotator's stored signals; decode with :meth:`flags_from`."""
        pipe.hgetall(self.keys.annotator_flags(project))

    @staticmethod
    def flags_from(raw: dict[bytes, bytes]) -> dict[int, list[Flag]]:
        """annotator -> their flags (as :meth:`flags` returns them), for those who have any."""
        out = {int(a): [Flag(**f) for f in json.loads(v)] for a, v in raw.items() if v}
        return {a: flags for a, flags in out.items() if flags}

    def queue_contributions(self, pipe: Pipeline, project: int, task: int) -> None:
        pipe.hgetall(self.keys.task_contributions(project, task))

    @staticmethod
    def contributions_from(raw: dict[bytes, bytes]) -> dict[int, dict[str, Any]]:
        return {int(k): json.loads(v) for k, v in raw.items()}

    def queue_task_score(self, pipe: Pipeline, project: int, task: int) -> None:
        pipe.hgetall(self.keys.task_score(project, task))

    @staticmethod
    def task_score_from(raw_bytes: dict[bytes, bytes]) -> dict[str, Any]:
        raw = {k.decode(): v.decode() for k, v in raw_bytes.items()}
        if not raw:
            return {}
        number = lambda v: float(v) if v else None  # noqa: E731
        return {"n": int(raw["n"]), "agreement": number(raw["agreement"]), "consensus": raw["consensus"] or None,
                "confidence": number(raw["confidence"]), "consensus_share": number(raw["consensus_share"]),
                "consensus_reached": raw["consensus_reached"] == "1", "posterior": json.loads(raw["posterior"])}

    def flags(self, project: int, annotator: int) -> list[Flag]:
        raw = self.redis.hget(self.keys.annotator_flags(project), annotator)
        return [Flag(**f) for f in json.loads(raw)] if raw else []

    def contributions(self, project: int, task: int) -> dict[int, dict[str, Any]]:
        """annotator -> their :class:`~qa_hooks.scoring.Contribution` to ``task`` (as stored, a dict)."""
        return self.contributions_from(self.redis.hgetall(self.keys.task_contributions(project, task)))

    def annotator_contributions(self, project: int, annotator: int, tasks: list[int]) -> dict[int, dict[str, Any]]:
        """task -> ``annotator``'s contribution to it (as stored, a dict), for those of ``tasks`` that have one."""
        pipe = self.redis.pipeline(transaction=False)
        self.queue_annotator_contributions(pipe, project, annotator, tasks)
        return self.annotator_contributions_from(tasks, pipe.execute())

    def queue_annotator_contributions(self, pipe: Pipeline, project: int, annotator: int, tasks: list[int]) -> None:
        """Queue :meth:`annotator_contributions`' reads (one reply a task); decode with the ``_from`` below."""
        for task in tasks:
            pipe.hget(self.keys.task_contributions(project, task), annotator)

    @staticmethod
    def annotator_contributions_from(tasks: list[int], raw: list[bytes | None]) -> dict[int, dict[str, Any]]:
        return {task: json.loads(value) for task, value in zip(tasks, raw, strict=True) if value}

    def task_score(self, project: int, task: int) -> dict[str, Any]:
        return self.task_score_from(self.redis.hgetall(self.keys.task_score(project, task)))


def _contribution_sums(c: Contribution) -> dict[str, float]:
    return {
        "gold_n": 0.0 if c.gold is None else 1.0,
        "gold_sum": c.gold or 0.0,
        "peer_n": 0.0 if c.peer is None else 1.0,
        "peer_sum": c.peer or 0.0,
        "pair_n": float(c.pair_n),
        "pair_sum": c.pair_sum,
    }


def _deltas(before: Contribution, after: Contribution) -> dict[str, float]:
    a, b = _contribution_sums(before), _contribution_sums(after)
    return {k: b[k] - a[k] for k in a}


def _subtract(stats: dict[str, float], c: Contribution) -> dict[str, float]:
    sums = _contribution_sums(c)
    return {k: stats.get(k, 0.0) - sums[k] for k in _STAT_FIELDS}
