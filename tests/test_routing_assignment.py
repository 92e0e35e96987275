"""Choosing the annotator of an escalated task (routing/assignment.py): eligibility, skill, load, availability."""

from __future__ import annotations

import pytest

from routing.assignment import Candidate, choose_annotator, class_accuracy
from routing.policy import DEFAULT_POLICY as P  # qualification → tier1 → tier2 → reviewer

NOW = 10_000.0


def cand(uid: int, tier: str = "tier2", reliability: float = 0.8, **kw: object) -> Candidate:
    kw.setdefault("last_seen", NOW - 60)
    return Candidate(uid, tier, reliability, **kw)  # type: ignore[arg-type]


def choose(candidates, tier="tier2", **kw):
    kw.setdefault("now", NOW)
    kw.setdefault("active_within", 3600.0)
    return choose_annotator(candidates, P, tier, **kw)


def test_only_the_required_tier_or_above_is_eligible() -> None:
    picked = choose([cand(1, "tier1", 0.99), cand(2, "tier2", 0.7), cand(3, "reviewer", 0.6)])
    assert picked.annotator_id == 2
    assert picked.evidence["rejected"] == {"below_tier": [1]}
    assert [r["annotator"] for r in picked.evidence["ranking"]] == [2, 3]


def test_never_someone_who_touched_the_task_nor_a_flagged_or_overloaded_one() -> None:
    picked = choose([cand(1, reliability=0.99), cand(2, flagged=True, reliability=0.98),
                     cand(3, load=50, reliability=0.97), cand(4, reliability=0.6)], exclude=[1])
    assert picked.annotator_id == 4
    assert picked.evidence["rejected"] == {"touched_task": [1], "flagged": [2], "overloaded": [3]}


def test_nobody_eligible_says_why() -> None:
    picked = choose([cand(1, "tier1"), cand(2, "tier2")], exclude=[2])
    assert picked.annotator_id is None
    assert "nobody eligible at tier2" in picked.reason and "1 below tier" in picked.reason
    assert choose([]).reason.endswith("(no candidates)")


def test_skill_on_the_disputed_classes_beats_overall_reliability() -> None:
    # 2 is better overall but confuses Positive; 1 has a strong record on exactly the disputed classes.
    one = cand(1, reliability=0.75, confusion={"Positive": {"Positive": 20}, "Negative": {"Negative": 20}})
    two = cand(2, reliability=0.9, confusion={"Positive": {"Positive": 2, "Negative": 18}})
    assert choose([one, two], disputed=["Positive", "Negative"]).annotator_id == 1
    assert choose([one, two]).annotator_id == 2  # nothing in dispute: overall reliability decides


def test_class_accuracy_shrinks_a_thin_record_towards_reliability() -> None:
    c = cand(1, reliability=0.8, confusion={"A": {"A": 1}})
    assert class_accuracy(c, "A") == pytest.approx((1 + 2 * 0.8) / (1 + 2))
    assert class_accuracy(c, "B") == pytest.approx(0.8)  # no record: its overall reliability


def test_load_breaks_near_ties_and_then_the_user_id() -> None:
    busy, idle = cand(1, reliability=0.82, load=5), cand(2, reliability=0.80, load=0)
    assert choose([busy, idle]).annotator_id == 2  # 0.82 - 5 * 0.02 < 0.80
    assert choose([cand(7), cand(3)]).annotator_id == 3


def test_available_annotators_first() -> None:
    away = cand(1, reliability=0.99, last_seen=NOW - 7200)
    never = cand(2, reliability=0.99, last_seen=None)
    here = cand(3, reliability=0.7)
    picked = choose([away, never, here])
    assert picked.annotator_id == 3 and "available" in picked.reason
    fallback = choose([away, never])
    assert fallback.annotator_id == 1 and "not seen recently" in fallback.reason


def test_unknown_tiers_are_ignored() -> None:
    picked = choose([cand(1, "gold-star"), cand(2)])
    assert picked.annotator_id == 2 and picked.evidence["rejected"] == {"unknown_tier": [1]}


def test_a_higher_required_tier() -> None:
    assert choose([cand(1, "tier2"), cand(2, "reviewer", 0.5)], tier="reviewer").annotator_id == 2
    with pytest.raises(ValueError, match="unknown tier"):
        choose([cand(1)], tier="nope")
