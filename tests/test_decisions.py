"""Tier and task decisions after each scored submission (routing/decisions.py): every rule and boundary."""

from __future__ import annotations

from dataclasses import replace

import pytest

from routing.decisions import (
    AnnotatorAction,
    AnnotatorState,
    SlaAction,
    TaskAction,
    TaskLabel,
    TaskState,
    check_sla,
    counted_labels,
    decide_annotator,
    decide_task,
)
from routing.policy import DEFAULT_POLICY, Policy, parse_policy

P = DEFAULT_POLICY  # qualification → tier1 → tier2 (promote 30 gold, lower >= 0.85; demote upper < 0.75) → reviewer


def annotator(tier: str = "tier1", **kw: object) -> AnnotatorState:
    return AnnotatorState(annotator_id="a1", tier=tier, **kw)  # type: ignore[arg-type]


def lab(value: str, who: str = "x", tier: str = "tier1", flagged: bool = False) -> TaskLabel:
    return TaskLabel(annotator_id=who, value=value, tier=tier, flagged=flagged)


def task(*labels: TaskLabel, **kw: object) -> TaskState:
    return TaskState("t1", tuple(labels), **kw)  # type: ignore[arg-type]


def with_stop(**stop: object) -> Policy:
    return parse_policy({"overlap": {"stop": stop}})


# -- annotators: input checks ------------------------------------------------------------------------------


def test_unknown_tier_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown tier 'gold-star'"):
        decide_annotator(annotator("gold-star"), P)


@pytest.mark.parametrize(
    "kw",
    [
        {"gold_answered": 3, "gold_correct": 4},
        {"gold_answered": -1},
        {"exam_attempts": -1},
    ],
)
def test_inconsistent_counts_are_an_error(kw: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="inconsistent counts"):
        decide_annotator(annotator(**kw), P)


@pytest.mark.parametrize(("low", "high"), [(0.8, 0.7), (-0.1, 0.5), (0.2, 1.1)])
def test_bad_reliability_interval_is_an_error(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="reliability interval"):
        decide_annotator(annotator(reliability_lower=low, reliability_upper=high), P)


# -- annotators: exam --------------------------------------------------------------------------------------


def test_exam_in_progress() -> None:
    d = decide_annotator(annotator("qualification", gold_answered=9, gold_correct=9), P)
    assert d.action is AnnotatorAction.NONE and d.tier == "qualification"
    assert d.reason == "exam in progress: 9/10 answered"


def test_exam_pass_exactly_at_pass_mark_qualifies_into_first_labeling_tier() -> None:
    d = decide_annotator(annotator("qualification", gold_answered=10, gold_correct=8), P)
    assert d.action is AnnotatorAction.QUALIFY and d.tier == "tier1"
    assert d.evidence["exam_score"] == pytest.approx(0.8)
    assert "passed the exam: 80% >= 80%" in d.reason


def test_exam_fail_just_below_pass_mark_may_retry() -> None:
    d = decide_annotator(annotator("qualification", gold_answered=10, gold_correct=7), P)
    assert d.action is AnnotatorAction.FAIL_EXAM and d.tier == "qualification"
    assert d.evidence["attempts_used"] == 1 and d.evidence["retry_allowed"] is True
    assert "attempt 1 of 2, may retry" in d.reason


def test_exam_fail_on_last_attempt() -> None:
    d = decide_annotator(annotator("qualification", gold_answered=10, gold_correct=0, exam_attempts=1), P)
    assert d.action is AnnotatorAction.FAIL_EXAM
    assert d.evidence["retry_allowed"] is False and "no attempts left" in d.reason


def test_exam_locked_out_after_all_attempts() -> None:
    d = decide_annotator(annotator("qualification", gold_answered=10, gold_correct=10, exam_attempts=2), P)
    assert d.action is AnnotatorAction.NONE and d.reason == "locked out: 2 of 2 exam attempts failed"


def test_exam_tier_never_promotes_on_reliability() -> None:
    d = decide_annotator(annotator("qualification", gold_answered=3, gold_correct=3, reliability_lower=0.99), P)
    assert d.action is AnnotatorAction.NONE


def test_without_exam_first_tier_uses_promotion_rules() -> None:
    policy = parse_policy(
        {
            "qualification": None,
            "tiers": [{"name": "crowd"}, {"name": "pro", "promote": {"min_gold": 5, "min_lower": 0.7}}],
        }
    )
    d = decide_annotator(annotator("crowd", gold_answered=5, gold_correct=5, reliability_lower=0.7), policy)
    assert d.action is AnnotatorAction.PROMOTE and d.tier == "pro"


# -- annotators: demotion and promotion ----------------------------------------------------------------------


def test_demotion_below_upper_bound() -> None:
    d = decide_annotator(annotator("tier2", gold_answered=50, reliability_lower=0.5, reliability_upper=0.7499), P)
    assert d.action is AnnotatorAction.DEMOTE and d.tier == "tier1"
    assert d.evidence["requalify"] is False and d.evidence["max_upper"] == 0.75


def test_no_demotion_at_exactly_the_bound() -> None:
    d = decide_annotator(annotator("tier2", gold_answered=50, reliability_lower=0.5, reliability_upper=0.75), P)
    assert d.action is AnnotatorAction.NONE


def test_demotion_from_first_labeling_tier_means_requalify() -> None:
    d = decide_annotator(annotator("tier1", reliability_lower=0.3, reliability_upper=0.59), P)
    assert d.action is AnnotatorAction.DEMOTE and d.tier == "qualification"
    assert d.evidence["requalify"] is True


def test_demotion_beats_promotion_and_flag() -> None:
    # Nonsense-but-possible inputs: the safer move wins.
    d = decide_annotator(
        annotator("tier1", gold_answered=99, reliability_lower=0.0, reliability_upper=0.5, flagged=True), P
    )
    assert d.action is AnnotatorAction.DEMOTE


def test_promotion_at_exact_bounds() -> None:
    d = decide_annotator(
        annotator(gold_answered=30, gold_correct=29, reliability_lower=0.85, reliability_upper=0.99), P
    )
    assert d.action is AnnotatorAction.PROMOTE and d.tier == "tier2"
    assert d.evidence["min_gold"] == 30 and d.evidence["min_lower"] == 0.85
    assert d.reason == "30 gold answers and lower bound 0.850 >= 0.85"


@pytest.mark.parametrize(
    ("gold", "lower", "missing"),
    [
        (29, 0.9, ["29/30 gold answers"]),
        (30, 0.8499, ["lower bound 0.850 < 0.85"]),
        (0, 0.1, ["0/30 gold answers", "lower bound 0.100 < 0.85"]),
    ],
)
def test_promotion_not_yet(gold: int, lower: float, missing: list[str]) -> None:
    d = decide_annotator(annotator(gold_answered=gold, reliability_lower=lower, reliability_upper=0.99), P)
    assert d.action is AnnotatorAction.NONE and d.tier == "tier1"
    assert d.reason == "not yet tier2: " + ", ".join(missing)


def test_flagged_annotator_promotion_is_held() -> None:
    d = decide_annotator(annotator(gold_answered=40, reliability_lower=0.95, flagged=True), P)
    assert d.action is AnnotatorAction.NONE and d.reason == "promotion to tier2 held: flagged"


def test_no_automatic_promotion_into_manual_tier_or_above_top() -> None:
    for tier in ("tier2", "reviewer"):
        d = decide_annotator(annotator(tier, gold_answered=500, reliability_lower=0.99, reliability_upper=1.0), P)
        assert d.action is AnnotatorAction.NONE
        assert d.reason == f"no automatic promotion above {tier}"


def test_hysteresis_no_flapping_around_the_boundary() -> None:
    """An annotator whose estimate wobbles between the bounds is promoted once and then stays put."""
    tier = "tier1"
    moves = []
    # Credible interval of width 0.1 whose centre wobbles between 0.80 and 0.90.
    for centre in (0.86, 0.90, 0.81, 0.88, 0.80, 0.84, 0.90, 0.81):
        state = annotator(tier, gold_answered=40, reliability_lower=centre - 0.05, reliability_upper=centre + 0.05)
        d = decide_annotator(state, P)
        if d.tier != tier:
            moves.append((tier, d.tier))
        tier = d.tier
    assert moves == [("tier1", "tier2")]


def test_every_decision_has_reason_and_evidence() -> None:
    d = decide_annotator(annotator(), P)
    assert d.reason and d.evidence["tier"] == "tier1" and "reliability_lower" in d.evidence


# -- tasks: counted labels -----------------------------------------------------------------------------------


def test_labels_below_required_tier_and_flagged_are_left_out() -> None:
    t = task(
        lab("A", "q", tier="qualification"),
        lab("A", "t1"),
        lab("B", "t2", tier="tier2"),
        lab("B", "bad", tier="tier2", flagged=True),
        required_tier="tier2",
    )
    assert [label.annotator_id for label in counted_labels(t, P)] == ["t2"]
    d = decide_task(
        replace(t, labels=t.labels[:3]),
        replace(P, overlap=replace(P.overlap, stop=replace(P.overlap.stop, rule="margin"))),
    )
    assert {e["annotator_id"] for e in d.evidence["excluded"]} == {"q", "t1"}
    assert d.evidence["excluded"][1]["why"] == "tier tier1 below required tier2"


def test_exam_tier_labels_never_count_even_when_required_tier_is_exam_tier() -> None:
    t = task(lab("A", "q", tier="qualification"), required_tier="qualification")
    assert counted_labels(t, P) == []
    assert decide_task(t, with_stop(rule="margin")).tier == "tier1"


# -- tasks: rule by rule -------------------------------------------------------------------------------------


def test_no_labels_needs_more() -> None:
    d = decide_task(task(), P)
    assert d.action is TaskAction.NEED_MORE and d.tier == "tier1"
    assert d.evidence["needed_at_least"] == 2 and d.label is None


def test_posterior_rule_requires_a_posterior() -> None:
    with pytest.raises(ValueError, match=r"needs TaskState\.posterior"):
        decide_task(task(lab("A")), P)


def test_reviewer_has_final_say() -> None:
    t = task(lab("A", "a"), lab("A", "b"), lab("B", "boss", tier="reviewer"), posterior={"A": 0.99, "B": 0.01})
    d = decide_task(t, P)
    assert d.action is TaskAction.FINAL and d.label == "B"
    assert d.evidence["decided_by"] == "boss" and d.reason == "reviewer boss has the final say"


def test_flagged_reviewer_has_no_final_say() -> None:
    t = task(lab("A", "a"), lab("B", "boss", tier="reviewer", flagged=True), posterior={"A": 0.6, "B": 0.4})
    d = decide_task(t, P)
    assert d.action is TaskAction.ESCALATE  # flagged newest submission
    assert d.label is None


def test_difficult_task_starts_higher_and_does_not_count() -> None:
    d = decide_task(task(difficulty=0.81), P)
    assert d.action is TaskAction.ESCALATE and d.tier == "tier2"
    assert d.evidence["counts_toward_limit"] is False
    assert d.reason.startswith("predicted difficulty 0.81 > 0.8")


def test_difficult_task_routing_ignores_the_escalation_cap() -> None:
    d = decide_task(task(difficulty=0.95, escalations=2), P)
    assert d.action is TaskAction.ESCALATE and d.tier == "tier2"


@pytest.mark.parametrize(("difficulty", "required"), [(0.8, None), (None, None), (0.99, "tier2"), (0.99, "reviewer")])
def test_difficulty_does_not_escalate(difficulty: float | None, required: str | None) -> None:
    d = decide_task(task(difficulty=difficulty, required_tier=required), P)
    assert d.action is TaskAction.NEED_MORE


def test_flagged_newest_submission_escalates() -> None:
    t = task(lab("A", "a"), lab("B", "sus", flagged=True), posterior={"A": 0.7, "B": 0.3})
    d = decide_task(t, P)
    assert d.action is TaskAction.ESCALATE and d.tier == "tier2"
    assert d.reason == "submission by flagged annotator sus" and d.evidence["counts_toward_limit"] is True
    assert d.evidence["counted"] == 1


def test_flagged_submission_ignored_when_disabled_or_not_newest_or_capped() -> None:
    t = task(lab("B", "sus", flagged=True), lab("A", "a"), posterior={"A": 0.7, "B": 0.3})
    assert decide_task(t, P).action is TaskAction.NEED_MORE  # not the newest
    t2 = task(lab("A", "a"), lab("B", "sus", flagged=True), posterior={"A": 0.7, "B": 0.3})
    off = replace(P, escalation=replace(P.escalation, on_flagged_annotator=False))
    assert decide_task(t2, off).action is TaskAction.NEED_MORE
    capped = decide_task(replace(t2, escalations=2), P)
    assert capped.action is TaskAction.NEED_MORE and capped.evidence["can_escalate"] is False


def test_posterior_stop_at_exact_threshold() -> None:
    d = decide_task(task(lab("A", "a"), lab("A", "b"), posterior={"A": 0.9, "B": 0.1}), P)
    assert d.action is TaskAction.FINAL and d.label == "A" and d.evidence["confident"] is True
    assert d.reason == "posterior 0.900 >= 0.9 with 2 agreeing labels"


def test_posterior_below_threshold_needs_more() -> None:
    d = decide_task(task(lab("A", "a"), lab("A", "b"), posterior={"A": 0.8999, "B": 0.1001}), P)
    assert d.action is TaskAction.NEED_MORE
    assert d.reason == "2 of at most 5 labels; posterior 0.900 < 0.9"


def test_a_crowd_matched_threshold_replaces_the_policy_threshold() -> None:
    labels = (lab("A", "a"), lab("A", "b"))
    posterior = {"A": 0.85, "B": 0.15}
    assert decide_task(task(*labels, posterior=posterior), P).action is TaskAction.NEED_MORE
    d = decide_task(task(*labels, posterior=posterior, stop_threshold=0.84), P)
    assert d.action is TaskAction.FINAL and d.reason == "posterior 0.850 >= 0.84 with 2 agreeing labels"
    assert d.evidence["stop_threshold"] == 0.84
    higher = decide_task(task(*labels, posterior={"A": 0.95, "B": 0.05}, stop_threshold=0.97), P)
    assert higher.action is TaskAction.NEED_MORE and "< 0.97" in higher.reason


def test_posterior_needs_min_agreeing_labels() -> None:
    # One trusted annotator outvotes another, but a single voice never settles a task.
    d = decide_task(task(lab("A", "pro"), lab("B", "new"), posterior={"A": 0.95, "B": 0.05}), P)
    assert d.action is TaskAction.NEED_MORE and "only 1 label(s) give it" in d.reason
    one = with_stop(min_agreeing=1)
    assert (
        decide_task(task(lab("A", "pro"), lab("B", "new"), posterior={"A": 0.95, "B": 0.05}), one).action
        is TaskAction.FINAL
    )


def test_no_stop_before_minimum_overlap() -> None:
    d = decide_task(task(lab("A"), posterior={"A": 0.999, "B": 0.001}), with_stop(min_agreeing=1))
    assert d.action is TaskAction.NEED_MORE and d.evidence["needed_at_least"] == 1


def test_low_agreement_after_minimum_escalates() -> None:
    t = task(lab("A", "a"), lab("B", "b"), lab("C", "c"), posterior={"A": 0.4, "B": 0.3, "C": 0.3})
    d = decide_task(t, P)
    assert d.action is TaskAction.ESCALATE and d.tier == "tier2"
    assert d.reason == "agreement 0.33 < 0.5 after 3 labels"


def test_agreement_exactly_at_threshold_does_not_escalate() -> None:
    d = decide_task(task(lab("A", "a"), lab("B", "b"), posterior={"A": 0.5, "B": 0.5}), P)
    assert d.action is TaskAction.NEED_MORE and d.evidence["agreement"] == 0.5


def test_given_agreement_overrides_the_computed_one() -> None:
    d = decide_task(task(lab("A", "a"), lab("A", "b"), posterior={"A": 0.6, "B": 0.4}, agreement=0.2), P)
    assert d.action is TaskAction.ESCALATE


def test_low_agreement_before_minimum_does_not_escalate() -> None:
    policy = parse_policy({"overlap": {"min": 3}})
    d = decide_task(task(lab("A", "a"), lab("B", "b"), posterior={"A": 0.5, "B": 0.5}, agreement=0.1), policy)
    assert d.action is TaskAction.NEED_MORE


def test_low_agreement_at_top_tier_keeps_collecting() -> None:
    # A ladder whose top tier has no final say, so its labels go through the normal rules.
    policy = parse_policy({"tiers": [{"name": "q"}, {"name": "t1"}, {"name": "t2"}]})
    labels = [lab(v, v, tier="t2") for v in "ABC"]
    t = task(*labels, required_tier="t2", posterior={"A": 0.4, "B": 0.3, "C": 0.3})
    d = decide_task(t, policy)
    assert d.action is TaskAction.NEED_MORE and d.evidence["can_escalate"] is False


def test_max_overlap_unsettled_escalates_then_finalises_unconfident() -> None:
    labels = [lab("A", "a"), lab("B", "b"), lab("A", "c"), lab("B", "d"), lab("A", "e")]
    post = {"A": 0.7, "B": 0.3}
    d = decide_task(task(*labels, posterior=post), P)
    assert d.action is TaskAction.ESCALATE and d.reason == "maximum overlap 5 reached unsettled"
    d = decide_task(task(*labels, posterior=post, escalations=2), P)
    assert d.action is TaskAction.FINAL and d.label == "A" and d.evidence["confident"] is False


def test_escalation_from_second_to_last_tier_goes_to_reviewer() -> None:
    labels = [lab(v, v, tier="tier2") for v in "ABC"]
    d = decide_task(task(*labels, required_tier="tier2", posterior={"A": 0.34, "B": 0.33, "C": 0.33}), P)
    assert d.action is TaskAction.ESCALATE and d.tier == "reviewer"


@pytest.mark.parametrize(
    ("values", "action"),
    [("AAB", TaskAction.FINAL), ("AB", TaskAction.NEED_MORE), ("A", TaskAction.NEED_MORE)],
)
def test_fixed_rule(values: str, action: TaskAction) -> None:
    policy = parse_policy(
        {"overlap": {"min": 2, "max": 3, "stop": {"rule": "fixed"}}, "escalation": {"agreement_below": None}}
    )
    d = decide_task(task(*[lab(v, f"w{i}") for i, v in enumerate(values)]), policy)
    assert d.action is action
    if action is TaskAction.FINAL:
        assert d.label == "A" and d.reason == "fixed overlap of 2 reached"


def test_fixed_rule_tie_at_max_finalises_unconfident_when_no_escalation() -> None:
    policy = parse_policy(
        {"overlap": {"min": 2, "max": 2, "stop": {"rule": "fixed"}}, "escalation": {"max_escalations": 0}}
    )
    d = decide_task(task(lab("A", "a"), lab("B", "b")), policy)
    assert d.action is TaskAction.FINAL and d.evidence["confident"] is False and d.label == "A"


@pytest.mark.parametrize(
    ("values", "action"),
    [
        ("AA", TaskAction.FINAL),
        ("AAB", TaskAction.NEED_MORE),
        ("AABAA", TaskAction.FINAL),
        ("ABAB", TaskAction.NEED_MORE),
    ],
)
def test_margin_rule(values: str, action: TaskAction) -> None:
    policy = parse_policy({"overlap": {"max": 6, "stop": {"rule": "margin", "k": 2}}})
    d = decide_task(task(*[lab(v, f"w{i}") for i, v in enumerate(values)]), policy)
    assert d.action is action, d.reason


def test_final_label_follows_posterior_not_raw_votes() -> None:
    policy = with_stop(min_agreeing=1, threshold=0.9)
    t = task(lab("A", "spammer1"), lab("A", "spammer2"), lab("B", "expert"), posterior={"A": 0.05, "B": 0.95})
    d = decide_task(t, policy)
    assert d.action is TaskAction.FINAL and d.label == "B"


def test_task_decisions_carry_reason_and_evidence() -> None:
    d = decide_task(task(lab("A", "a"), posterior={"A": 0.6, "B": 0.4}), P)
    assert d.reason
    for key in ("required_tier", "counted", "excluded", "votes", "leader", "agreement", "posterior", "can_escalate"):
        assert key in d.evidence


# -- SLA -----------------------------------------------------------------------------------------------------


def test_sla_not_applicable() -> None:
    assert check_sla(task(), 1e9, P).action is SlaAction.NONE  # never escalated
    no_deadline = replace(P, sla=replace(P.sla, deadline_seconds=None))
    assert check_sla(task(escalated_at=0.0), 1e9, no_deadline).action is SlaAction.NONE


def test_sla_within_deadline_inclusive() -> None:
    d = check_sla(task(escalated_at=100.0, required_tier="tier2"), 100.0 + 86400, P)
    assert d.action is SlaAction.NONE and d.evidence["waited_seconds"] == 86400


def test_sla_breach_escalates_one_tier() -> None:
    d = check_sla(task(escalated_at=0.0, required_tier="tier2", escalations=1), 86401.0, P)
    assert d.action is SlaAction.ESCALATE and d.tier == "reviewer"
    assert d.reason == "deadline missed (86401s > 86400s): escalate"


@pytest.mark.parametrize(("required", "escalations"), [("reviewer", 0), ("tier2", 2)])
def test_sla_breach_alerts_when_escalation_impossible(required: str, escalations: int) -> None:
    d = check_sla(task(escalated_at=0.0, required_tier=required, escalations=escalations), 9e9, P)
    assert d.action is SlaAction.ALERT and "cannot escalate further" in d.reason


def test_sla_breach_alerts_when_policy_says_so() -> None:
    policy = replace(P, sla=replace(P.sla, on_breach="alert"))
    d = check_sla(task(escalated_at=0.0, required_tier="tier2"), 9e9, policy)
    assert d.action is SlaAction.ALERT and d.tier is None and "policy says alert" in d.reason
