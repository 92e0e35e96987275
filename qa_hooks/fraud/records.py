"""The adapter between crowdgate's Redis and the fraud signals: every annotator's answers in one project.

Reads the submission store (results, lead times, skips, creation times), the ledger's gold, the tasks' data (for
their text length) and predicted difficulty; the consensus of a task is the majority answer of the *other*
annotators (those in ``excluded``, the paused, left out). Pre-labels come from the caller (Label Studio's
predictions), when known.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from core.label_config import LabelConfig
from qa_hooks.events import Submission, epoch_seconds
from qa_hooks.fraud.evidence import Answer
from qa_hooks.ledger import Ledger
from qa_hooks.scoring import label_of
from qa_hooks.store import SubmissionStore

__all__ = ["choice_control", "project_answers", "text_of"]


def choice_control(label_config: str) -> tuple[str | None, tuple[str, ...]]:
    """The config's first single-choice control and its options in config order, or ``(None, ())``."""
    try:
        controls = LabelConfig.parse(label_config).controls
    except Exception:  # a config scoring cannot read has no categorical signals, not a failed evaluation
        return None, ()
    for control in controls:
        if control.type == "choices" and not control.multiple and control.labels:
            return control.name, tuple(control.labels)
    return None, ()


def text_of(result: Iterable[Mapping[str, Any]]) -> str | None:
    """The free text of a result's TextArea regions, joined; None when it has none."""
    parts = []
    for region in result:
        if str(region.get("type", "")).lower() == "textarea":
            value = (region.get("value") or {}).get("text")
            parts += [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []
    return " ".join(parts) if parts else None


def _length(data: Mapping[str, Any]) -> float | None:
    # crowdgate's own fields (exam offers, Data Manager status words) are not what the annotator reads
    texts = [v for k, v in data.items() if isinstance(v, str) and not str(k).startswith("crowdgate_")
             and not v.startswith(("http://", "https://", "/data/"))]
    return float(sum(len(t) for t in texts)) if texts else None


def _at(sub: Submission) -> float | None:
    try:
        return epoch_seconds(sub.created_at)
    except ValueError:
        return None


def project_answers(store: SubmissionStore, ledger: Ledger, project: int, *,
                    prelabels: Mapping[int, str] | None = None,
                    excluded: Iterable[int] = ()) -> tuple[dict[int, list[Answer]], tuple[str, ...]]:
    """Every annotator's answers in ``project``, oldest first, and the choice options in config order."""
    label_config = store.project_info(project).get("label_config") or "<View/>"
    control, options = choice_control(label_config)
    left_out = set(excluded)
    logs = {a: store.annotator_log(project, a) for a in store.annotators(project)}
    tasks = sorted({s.task for log in logs.values() for s in log})
    gold_tasks = set(ledger.gold_tasks(project))
    gold = {t: ledger.gold(project, t, label_config) for t in tasks if t in gold_tasks}
    votes: dict[int, Counter[str]] = {}
    option_of: dict[str, str | None] = {}
    for annotator, log in logs.items():
        for s in log:
            if s.ground_truth:
                continue
            option = label_of(s.result, control) if control and not s.was_cancelled else None
            option_of[s.unique_id] = option
            if option is not None and annotator not in left_out:
                votes.setdefault(s.task, Counter())[option] += 1
    lengths: dict[int, float | None] = {}
    # predicted difficulty: the task's own meta, else what crowdgate's difficulty model stored (Keys.difficulty)
    stored = {int(t): float(v) for t, v in store.redis.hgetall(store.keys.difficulty(project)).items()}
    difficulty: dict[int, float | None] = {}
    for task in tasks:
        info = store.task_info(project, task)
        lengths[task] = _length(info.data) if info else None
        meta = (info.meta if info else {}) or {}
        value = meta.get("difficulty", (meta.get("crowdgate") or {}).get("difficulty"))
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0
        difficulty[task] = float(value) if ok else stored.get(task)
    out: dict[int, list[Answer]] = {}
    for annotator, log in logs.items():
        answers = []
        for s in log:
            if s.ground_truth:
                continue
            option = option_of.get(s.unique_id)
            others = votes.get(s.task, Counter()).copy()
            if option is not None and annotator not in left_out:
                others[option] -= 1
            top = [(v, c) for v, c in others.most_common(2) if c > 0]
            consensus = top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else None
            task_gold = gold.get(s.task)
            answers.append(Answer(
                task=s.task, at=_at(s), lead_time=s.lead_time, option=option,
                text=None if s.was_cancelled else text_of(s.result), length=lengths.get(s.task),
                skipped=s.was_cancelled,
                gold=label_of(task_gold, control) if task_gold and control else None,
                consensus=consensus, prelabel=(prelabels or {}).get(s.task), difficulty=difficulty.get(s.task)))
        out[annotator] = answers
    return out, options
