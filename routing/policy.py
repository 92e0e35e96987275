"""Per-project routing policy: tiers, qualification exam, gold share, overlap, escalation, SLA and fraud actions.

A policy is a YAML file next to the project's label config (see ``label_configs/default.policy.yaml``, which
spells out every key with its default). Every key is optional: an empty file gives :data:`DEFAULT_POLICY`.
Validation collects every problem and raises one :class:`PolicyError` whose lines name the offending key by
path, e.g. ``tiers[1].promote.min_gold: must be an integer >= 0, got 'x'``. Unknown keys are errors, so a typo
cannot silently fall back to a default.

Tier rules are *entry* rules: ``tiers[i].promote`` says when an annotator of tier ``i-1`` moves up into tier
``i`` (at least ``min_gold`` gold answers and the lower end of the reliability credible interval >=
``min_lower``); ``tiers[i].demote`` says when a tier-``i`` annotator drops back to ``i-1`` (upper end <
``max_upper``). Hysteresis: ``min_lower - max_upper`` must be at least ``hysteresis_margin`` in every tier, so
an annotator who was just promoted cannot be demoted by the same evidence.

Only :func:`load_policy` touches the file system.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "DEFAULT_POLICY",
    "Cost",
    "DemoteRule",
    "Escalation",
    "Fraud",
    "Llm",
    "Overlap",
    "Policy",
    "PolicyError",
    "PromoteRule",
    "Qualification",
    "Review",
    "Sla",
    "StopRule",
    "Tier",
    "labeling_cost",
    "load_policy",
    "parse_policy",
]

StopKind = Literal["fixed", "margin", "posterior"]
BreachAction = Literal["escalate", "alert"]
WorkerModelKind = Literal["confusion", "one_coin"]
WageBasis = Literal["label", "hour"]


class PolicyError(ValueError):
    """An invalid policy; ``errors`` lists every problem as ``path: message``."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = list(errors)
        head = f"invalid policy{f' {source}' if source else ''}"
        super().__init__(head + ":\n  " + "\n  ".join(self.errors))


@dataclass(frozen=True)
class PromoteRule:
    """Enter this tier from the one below once ``min_gold`` gold answers are in and the reliability
    interval's lower end is >= ``min_lower``."""

    min_gold: int
    min_lower: float


@dataclass(frozen=True)
class DemoteRule:
    """Drop back to the tier below once the reliability interval's upper end is < ``max_upper``."""

    max_upper: float


@dataclass(frozen=True)
class Tier:
    """One rung of the ladder. ``promote`` None: nobody enters automatically (appointed by hand or, for the
    first tier after qualification, by passing the exam). ``final_say``: a label from this tier settles a task
    (reviewers)."""

    name: str
    wage: float = 0.0
    promote: PromoteRule | None = None
    demote: DemoteRule | None = None
    final_say: bool = False


@dataclass(frozen=True)
class Qualification:
    """Entry exam, taken in the first tier: the first ``exam_tasks`` tasks are gold; pass with a share
    correct >= ``pass_mark``; ``max_retries`` further attempts after a failed one."""

    exam_tasks: int = 10
    pass_mark: float = 0.8
    max_retries: int = 1


@dataclass(frozen=True)
class StopRule:
    """When a task has enough labels (see :mod:`routing.decisions`).

    ``fixed``: ``overlap.min`` labels with one clear leading answer. ``margin``: the leading answer is ``k``
    votes ahead of the next. ``posterior``: the reliability-weighted consensus posterior of the leading answer
    is >= ``threshold`` and at least ``min_agreeing`` labels give it; worker models are ``worker_model``
    (Dawid–Skene confusion matrices or one-coin accuracies) starting from ``prior_accuracy``.

    ``match_overlap``: instead of the fixed ``threshold``, use the lowest threshold at which this rule is as
    accurate as a fixed overlap of this many labels, plus ``match_lead``, both judged on a crowd simulated
    from the annotators' own models (:func:`routing.stopping.matched_threshold`), once those models rest on
    ``match_min_labels`` labels in all; ``threshold`` applies until then. None: always ``threshold``.
    """

    rule: StopKind = "posterior"
    k: int = 2
    threshold: float = 0.9
    min_agreeing: int = 2
    worker_model: WorkerModelKind = "confusion"
    prior_accuracy: float = 0.7
    match_overlap: int | None = 5
    match_lead: float = 0.04
    match_min_labels: int = 200


@dataclass(frozen=True)
class Overlap:
    """Labels per task: at least ``min`` before any stop, never more than ``max`` (counted labels only)."""

    min: int = 2
    max: int = 5
    stop: StopRule = field(default_factory=StopRule)


@dataclass(frozen=True)
class Escalation:
    """When a task goes to a higher tier. None disables a trigger.

    ``agreement_below``: after ``overlap.min`` labels, the leading answer's share of labels is below this.
    ``difficulty_above``: the task's predicted difficulty is above this; it then starts at
    ``difficult_start_tier``. ``on_flagged_annotator``: a flagged annotator submitted. ``max_escalations``
    caps agreement, flag, overlap and SLA escalations per task.
    """

    agreement_below: float | None = 0.5
    difficulty_above: float | None = 0.8
    difficult_start_tier: str | None = None
    on_flagged_annotator: bool = True
    max_escalations: int = 2


@dataclass(frozen=True)
class Review:
    """The reviewer tier's review queue (:mod:`routing.review`) and the LLM audit of human work
    (:mod:`ml_backend.audit`). ``tier`` None: no review. ``rate``: share of finished tasks a reviewer sees, of
    which ``random_share`` is drawn at random (an unbiased estimate of the error rate) and the rest by lowest
    agreement first; on top of it every task of an annotator in their first ``new_annotator_tasks`` tasks after
    qualifying, and (``llm_disagreements``) every task where the LLM audit disagreed with a human label.
    ``llm_audit_rate``: share of submitted human annotations the LLM judges (0: off; costs are capped by
    ``CROWDGATE_LLM_BUDGET_USD`` like pre-labels); submissions on tasks with agreement below
    ``low_agreement_below``, of flagged annotators and of new annotators are judged first (always)."""

    tier: str | None = "reviewer"
    rate: float = 0.05
    random_share: float = 0.2
    new_annotator_tasks: int = 10
    llm_disagreements: bool = True
    llm_audit_rate: float = 0.0
    low_agreement_below: float = 0.7


@dataclass(frozen=True)
class Sla:
    """Deadline for an escalated task, counted from its escalation; None disables. On breach: ``escalate``
    one tier up (an alert when that is impossible) or ``alert`` only."""

    deadline_seconds: float | None = 86400.0
    on_breach: BreachAction = "escalate"


@dataclass(frozen=True)
class Fraud:
    """What the fraud risk (``qa_hooks.fraud.risk``: -log10 of the Bonferroni-corrected p-value of the strongest
    signal) makes crowdgate do (:mod:`routing.pausing`). ``review_at``: flag for review (listed, audited; labels
    still count); ``pause_at``: pause; None disables that action. ``requeue``: on a pause, the tasks the
    annotator touched go back through routing. Nobody is judged before ``min_submissions``; an annotator an
    admin cleared is judged again after ``recheck_after`` more submissions."""

    enabled: bool = True
    min_submissions: int = 5
    review_at: float | None = 1.5
    pause_at: float | None = 2.0
    requeue: bool = True
    recheck_after: int = 50


@dataclass(frozen=True)
class Cost:
    """How the cost report prices work (:mod:`crowdgate.report.cost`). ``wage_per``: each tier's ``wage`` is
    paid per ``label`` (a submitted, not skipped annotation) or per ``hour`` of Label Studio lead time. The
    platform's fee is ``fee_share`` of the wage plus ``fee_per_label`` per label. ``baseline_overlap``: labels
    per task of the fixed-overlap baseline the report compares with (None: ``overlap.max``). ``currency`` is
    only shown."""

    wage_per: WageBasis = "label"
    fee_share: float = 0.0
    fee_per_label: float = 0.0
    baseline_overlap: int | None = None
    currency: str = "USD"


@dataclass(frozen=True)
class Llm:
    """The LLM pre-labels as a member of the crowd (:mod:`qa_hooks.llm_annotator`). Its answers always enter the
    refit as one pseudo-annotator per model and prompt version, never as human labels; ``counts_toward_stop``:
    whether its answer may also enter the stop rule's posterior and count as one agreeing voice (so one human
    agreeing with a calibrated LLM above the threshold can stop a task), once its accuracy learnt by the refit
    reaches ``min_accuracy`` (a weak model's voice never stands in for a human's); a stop that needs the LLM's
    voice needs the leading answer's posterior at ``stop_threshold`` too (the "p" of "one human agreeing with a
    calibrated LLM above p", :func:`routing.stopping.decide_stop_with_llm`)."""

    counts_toward_stop: bool = False
    min_accuracy: float = 0.8
    stop_threshold: float = 0.95


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier("qualification", wage=0.0),
    Tier("tier1", wage=0.05, demote=DemoteRule(max_upper=0.6)),
    Tier("tier2", wage=0.08, promote=PromoteRule(min_gold=30, min_lower=0.85), demote=DemoteRule(max_upper=0.75)),
    Tier("reviewer", wage=0.15, final_say=True),
)


@dataclass(frozen=True)
class Policy:
    """A validated policy. Tiers are ordered lowest first; with ``qualification`` set, ``tiers[0]`` is the
    exam tier and annotators there never count on real tasks."""

    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    hysteresis_margin: float = 0.05
    qualification: Qualification | None = field(default_factory=Qualification)
    review: Review = field(default_factory=Review)
    gold_share: float = 0.1
    overlap: Overlap = field(default_factory=Overlap)
    escalation: Escalation = field(default_factory=lambda: Escalation(difficult_start_tier="tier2"))
    sla: Sla = field(default_factory=Sla)
    fraud: Fraud = field(default_factory=Fraud)
    llm: Llm = field(default_factory=Llm)
    cost: Cost = field(default_factory=Cost)

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def tier_index(self, name: str) -> int:
        """Position of tier ``name`` (ValueError if the policy has no such tier)."""
        try:
            return self.tier_names.index(name)
        except ValueError:
            raise ValueError(f"unknown tier {name!r}; the policy has {list(self.tier_names)}") from None

    def tier(self, name: str) -> Tier:
        return self.tiers[self.tier_index(name)]

    @property
    def first_labeling_index(self) -> int:
        """Lowest tier whose labels count on real tasks (the one after the exam tier, if any)."""
        return 1 if self.qualification is not None else 0

    @property
    def first_labeling_tier(self) -> str:
        return self.tiers[self.first_labeling_index].name


DEFAULT_POLICY = Policy()


def labeling_cost(policy: Policy, annotations_by_tier: Mapping[str, int]) -> dict[str, float]:
    """Cost per tier and ``total`` for a count of annotations per tier, at each tier's wage."""
    cost = {name: policy.tier(name).wage * count for name, count in annotations_by_tier.items()}
    cost["total"] = sum(cost.values())
    return cost


# -- parsing ---------------------------------------------------------------------------------------------


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class _Checker:
    """Reads typed values out of nested mappings, recording ``path: message`` for each problem."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path or '<policy>'}: {message}")

    def section(self, data: Any, path: str, keys: set[str]) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.fail(path, f"must be a mapping, got {data!r}")
            return {}
        for key in data:
            if key not in keys:
                self.fail(_join(path, key), f"unknown key (expected one of {sorted(keys)})")
        return dict(data)

    def integer(self, data: dict[str, Any], key: str, path: str, default: int, minimum: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(_join(path, key), f"must be an integer >= {minimum}, got {value!r}")
            return default
        return value

    def number(
        self,
        data: dict[str, Any],
        key: str,
        path: str,
        default: float | None,
        low: float,
        high: float,
        *,
        nullable: bool = False,
        open_low: bool = False,
        open_high: bool = False,
    ) -> Any:
        value = data.get(key, default)
        if value is None and nullable:
            return None
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
        if not ok:
            bounds = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
            hint = " or null" if nullable else ""
            self.fail(_join(path, key), f"must be a number in {bounds}{hint}, got {value!r}")
            return default
        return float(value)

    def boolean(self, data: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.fail(_join(path, key), f"must be true or false, got {value!r}")
            return default
        return value

    def choice(self, data: dict[str, Any], key: str, path: str, default: str, options: tuple[str, ...]) -> Any:
        value = data.get(key, default)
        if value not in options:
            self.fail(_join(path, key), f"must be one of {list(options)}, got {value!r}")
            return default
        return value


def _parse_tier(check: _Checker, raw: Any, path: str) -> Tier | None:
    data = check.section(raw, path, {"name", "wage", "promote", "demote", "final_say"})
    if not isinstance(raw, Mapping):
        return None
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        check.fail(f"{path}.name", f"must be a non-empty string, got {name!r}")
        name = ""
    wage = check.number(data, "wage", path, 0.0, 0.0, math.inf, open_high=True)
    promote = None
    if data.get("promote") is not None:
        p_path = f"{path}.promote"
        p_data = check.section(data["promote"], p_path, {"min_gold", "min_lower"})
        if isinstance(data["promote"], Mapping):
            promote = PromoteRule(
                min_gold=check.integer(p_data, "min_gold", p_path, 0, 0),
                min_lower=check.number(p_data, "min_lower", p_path, None, 0.0, 1.0),
            )
    demote = None
    if data.get("demote") is not None:
        d_path = f"{path}.demote"
        d_data = check.section(data["demote"], d_path, {"max_upper"})
        if isinstance(data["demote"], Mapping):
            demote = DemoteRule(max_upper=check.number(d_data, "max_upper", d_path, None, 0.0, 1.0))
    final_say = check.boolean(data, "final_say", path, False)
    return Tier(name=name, wage=wage, promote=promote, demote=demote, final_say=final_say)


def _parse_tiers(check: _Checker, raw: Any, margin: float, has_exam: bool) -> tuple[Tier, ...]:
    if raw is None:
        return DEFAULT_TIERS
    if not isinstance(raw, list) or not raw:
        check.fail("tiers", f"must be a non-empty list of tiers, got {raw!r}")
        return DEFAULT_TIERS
    tiers: list[Tier] = []
    for i, item in enumerate(raw):
        tier = _parse_tier(check, item, f"tiers[{i}]")
        if tier is None:
            continue
        tiers.append(tier)
        path = f"tiers[{i}]"
        if tier.name and tier.name in [t.name for t in tiers[:-1]]:
            check.fail(f"{path}.name", f"duplicate tier name {tier.name!r}")
        if i == 0 and (tier.promote is not None or tier.demote is not None):
            check.fail(path, "the first tier is where annotators start: it takes no promote or demote rule")
        if i == 1 and has_exam and tier.promote is not None:
            check.fail(f"{path}.promote", "annotators enter the first tier after qualification by the exam")
        if tier.promote is not None and tier.demote is not None:
            # Hysteresis: a fresh promotion (lower >= min_lower) must never meet the demotion bound at once.
            gap = tier.promote.min_lower - tier.demote.max_upper
            if gap < margin - 1e-9:
                check.fail(
                    path,
                    f"promote.min_lower {tier.promote.min_lower} must exceed demote.max_upper "
                    f"{tier.demote.max_upper} by hysteresis_margin {margin} (gap {gap:.3g})",
                )
    if has_exam and len(raw) < 2:
        check.fail("tiers", "with a qualification exam there must be a tier to qualify into (at least 2 tiers)")
    return tuple(tiers)


def _parse_stop(check: _Checker, raw: Any) -> StopRule:
    path = "overlap.stop"
    matching = ("match_overlap", "match_lead", "match_min_labels")
    keys = {"rule", "k", "threshold", "min_agreeing", "worker_model", "prior_accuracy", *matching}
    data = check.section(raw, path, keys)
    default = StopRule()
    rule = check.choice(data, "rule", path, default.rule, ("fixed", "margin", "posterior"))
    needs_rule = {"k": "margin", "threshold": "posterior", "min_agreeing": "posterior"}
    for key, needs in {**needs_rule, **dict.fromkeys(matching, "posterior")}.items():
        if key in data and rule != needs:
            check.fail(f"{path}.{key}", f"only applies to rule '{needs}' (rule is {rule!r})")
    match_overlap = data.get("match_overlap", default.match_overlap)
    if match_overlap is not None:
        match_overlap = check.integer(data, "match_overlap", path, 5, 1)
    return StopRule(
        rule=rule,
        k=check.integer(data, "k", path, default.k, 1),
        threshold=check.number(data, "threshold", path, default.threshold, 0.0, 1.0, open_low=True, open_high=True),
        min_agreeing=check.integer(data, "min_agreeing", path, default.min_agreeing, 1),
        worker_model=check.choice(data, "worker_model", path, default.worker_model, ("confusion", "one_coin")),
        prior_accuracy=check.number(
            data, "prior_accuracy", path, default.prior_accuracy, 0.0, 1.0, open_low=True, open_high=True
        ),
        match_overlap=match_overlap,
        match_lead=check.number(data, "match_lead", path, default.match_lead, 0.0, 1.0, open_high=True),
        match_min_labels=check.integer(data, "match_min_labels", path, default.match_min_labels, 0),
    )


def _parse_review(check: _Checker, raw: Any, names: list[str]) -> Review:
    path = "review"
    keys = {"tier", "rate", "random_share", "new_annotator_tasks", "llm_disagreements", "llm_audit_rate",
            "low_agreement_below"}
    data = check.section(raw, path, keys)
    d = Review()
    # Default: the tier named "reviewer" when the ladder has one, else no review.
    tier = data.get("tier", d.tier if d.tier in names else None)
    if tier is not None and tier not in names:
        check.fail(f"{path}.tier", f"must name a tier ({names}) or be null, got {tier!r}")
        tier = None
    return Review(
        tier=tier,
        rate=check.number(data, "rate", path, d.rate, 0.0, 1.0),
        random_share=check.number(data, "random_share", path, d.random_share, 0.0, 1.0),
        new_annotator_tasks=check.integer(data, "new_annotator_tasks", path, d.new_annotator_tasks, 0),
        llm_disagreements=check.boolean(data, "llm_disagreements", path, d.llm_disagreements),
        llm_audit_rate=check.number(data, "llm_audit_rate", path, d.llm_audit_rate, 0.0, 1.0),
        low_agreement_below=check.number(data, "low_agreement_below", path, d.low_agreement_below, 0.0, 1.0),
    )


def parse_policy(source: str | Mapping[str, Any] | None, *, origin: str | None = None) -> Policy:
    """Validate a policy given as YAML text or an already-parsed mapping (None or empty: all defaults).

    Raises :class:`PolicyError` listing every problem; ``origin`` (e.g. the file name) goes in its message.
    """
    check = _Checker()
    if isinstance(source, str):
        try:
            source = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise PolicyError([f"<yaml>: {exc}"], origin) from None
    top_keys = {"version", "tiers", "hysteresis_margin", "qualification", "gold", "overlap", "escalation", "sla",
                "fraud"}
    top_keys.add("review")  # routing.review's section
    top_keys.add("llm")  # qa_hooks.llm_annotator's section
    top_keys.add("cost")  # crowdgate.report.cost's section
    data = check.section(source, "", top_keys)
    if source is not None and not isinstance(source, Mapping):
        raise PolicyError(check.errors, origin)
    if data.get("version", 1) != 1:
        check.fail("version", f"must be 1, got {data.get('version')!r}")

    margin = check.number(data, "hysteresis_margin", "", 0.05, 0.0, 1.0)

    qualification: Qualification | None = Qualification()
    if "qualification" in data and data["qualification"] is None:
        qualification = None  # explicit null: no exam, newcomers start in tiers[0]
    elif "qualification" in data:
        q_data = check.section(data["qualification"], "qualification", {"exam_tasks", "pass_mark", "max_retries"})
        qualification = Qualification(
            exam_tasks=check.integer(q_data, "exam_tasks", "qualification", 10, 1),
            pass_mark=check.number(q_data, "pass_mark", "qualification", 0.8, 0.0, 1.0),
            max_retries=check.integer(q_data, "max_retries", "qualification", 1, 0),
        )

    tiers = _parse_tiers(check, data.get("tiers"), margin, qualification is not None)
    names = [t.name for t in tiers]

    review = _parse_review(check, data.get("review"), names)

    g_data = check.section(data.get("gold"), "gold", {"share"})
    gold_share = check.number(g_data, "share", "gold", 0.1, 0.0, 1.0, open_high=True)

    o_data = check.section(data.get("overlap"), "overlap", {"min", "max", "stop"})
    o_min = check.integer(o_data, "min", "overlap", 2, 1)
    o_max = check.integer(o_data, "max", "overlap", 5, 1)
    if o_max < o_min:
        check.fail("overlap.max", f"must be >= overlap.min ({o_min}), got {o_max}")
    stop = _parse_stop(check, o_data.get("stop"))
    if stop.rule == "posterior" and stop.min_agreeing > o_max:
        check.fail("overlap.stop.min_agreeing", f"can never be met with overlap.max {o_max}")
    overlap = Overlap(min=o_min, max=o_max, stop=stop)

    e_keys = {"agreement_below", "difficulty_above", "difficult_start_tier", "on_flagged_annotator", "max_escalations"}
    e_data = check.section(data.get("escalation"), "escalation", e_keys)
    # Default: hard tasks start one tier above the first labeling tier (tier2 in the default ladder).
    first_labeling = 1 if qualification is not None else 0
    default_start = names[first_labeling + 1] if len(names) > first_labeling + 1 else None
    start_tier = e_data.get("difficult_start_tier", default_start)
    if start_tier is not None and start_tier not in names:
        check.fail("escalation.difficult_start_tier", f"must name a tier ({names}), got {start_tier!r}")
    elif start_tier is not None and names.index(start_tier) < first_labeling:
        check.fail("escalation.difficult_start_tier", f"must be a labeling tier, not {start_tier!r}")
    difficulty_above = check.number(e_data, "difficulty_above", "escalation", 0.8, 0.0, 1.0, nullable=True)
    if difficulty_above is not None and start_tier is None:
        check.fail("escalation.difficult_start_tier", "is needed when escalation.difficulty_above is set")
    escalation = Escalation(
        agreement_below=check.number(e_data, "agreement_below", "escalation", 0.5, 0.0, 1.0, nullable=True),
        difficulty_above=difficulty_above,
        difficult_start_tier=start_tier,
        on_flagged_annotator=check.boolean(e_data, "on_flagged_annotator", "escalation", True),
        max_escalations=check.integer(e_data, "max_escalations", "escalation", 2, 0),
    )

    s_data = check.section(data.get("sla"), "sla", {"deadline_seconds", "on_breach"})
    sla = Sla(
        deadline_seconds=check.number(
            s_data, "deadline_seconds", "sla", 86400.0, 0.0, math.inf, nullable=True, open_low=True, open_high=True
        ),
        on_breach=check.choice(s_data, "on_breach", "sla", "escalate", ("escalate", "alert")),
    )

    fraud = _parse_fraud(check, data.get("fraud"))
    l_data = check.section(data.get("llm"), "llm", {"counts_toward_stop", "min_accuracy", "stop_threshold"})
    llm = Llm(counts_toward_stop=check.boolean(l_data, "counts_toward_stop", "llm", False),
              min_accuracy=check.number(l_data, "min_accuracy", "llm", 0.8, 0.0, 1.0),
              stop_threshold=check.number(l_data, "stop_threshold", "llm", 0.95, 0.0, 1.0))
    cost = _parse_cost(check, data.get("cost"))

    if check.errors:
        raise PolicyError(check.errors, origin)
    return Policy(
        tiers=tiers,
        hysteresis_margin=margin,
        qualification=qualification,
        review=review,
        gold_share=gold_share,
        overlap=overlap,
        escalation=escalation,
        sla=sla,
        fraud=fraud,
        llm=llm,
        cost=cost,
    )


def _parse_cost(check: _Checker, raw: Any) -> Cost:
    path, d = "cost", Cost()
    data = check.section(raw, path, {"wage_per", "fee_share", "fee_per_label", "baseline_overlap", "currency"})
    baseline = data.get("baseline_overlap", d.baseline_overlap)
    if baseline is not None:
        baseline = check.integer(data, "baseline_overlap", path, 5, 1)
    currency = data.get("currency", d.currency)
    if not isinstance(currency, str) or not currency.strip():
        check.fail(f"{path}.currency", f"must be a non-empty string, got {currency!r}")
        currency = d.currency
    return Cost(
        wage_per=check.choice(data, "wage_per", path, d.wage_per, ("label", "hour")),
        fee_share=check.number(data, "fee_share", path, d.fee_share, 0.0, 10.0),
        fee_per_label=check.number(data, "fee_per_label", path, d.fee_per_label, 0.0, math.inf, open_high=True),
        baseline_overlap=baseline,
        currency=currency.strip(),
    )


def _parse_fraud(check: _Checker, raw: Any) -> Fraud:
    keys = {"enabled", "min_submissions", "review_at", "pause_at", "requeue", "recheck_after"}
    data = check.section(raw, "fraud", keys)
    d = Fraud()
    fraud = Fraud(
        enabled=check.boolean(data, "enabled", "fraud", d.enabled),
        min_submissions=check.integer(data, "min_submissions", "fraud", d.min_submissions, 1),
        review_at=check.number(data, "review_at", "fraud", d.review_at, 0.0, 300.0, nullable=True, open_low=True),
        pause_at=check.number(data, "pause_at", "fraud", d.pause_at, 0.0, 300.0, nullable=True, open_low=True),
        requeue=check.boolean(data, "requeue", "fraud", d.requeue),
        recheck_after=check.integer(data, "recheck_after", "fraud", d.recheck_after, 1),
    )
    if fraud.review_at is not None and fraud.pause_at is not None and fraud.review_at > fraud.pause_at:
        check.fail("fraud.review_at", f"must be <= fraud.pause_at ({fraud.pause_at}), got {fraud.review_at}")
    return fraud


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file at ``path`` (the only function here that does I/O)."""
    path = Path(path)
    return parse_policy(path.read_text(encoding="utf-8"), origin=str(path))
