"""The pure review and audit sampling rules, and the policy's ``review:`` section."""

from __future__ import annotations

import numpy as np
import pytest

from routing.policy import DEFAULT_POLICY, PolicyError, parse_policy
from routing.review_sampling import (
    AuditCandidate,
    ReviewCandidate,
    error_rate_estimate,
    review_budget,
    select_for_audit,
    select_for_review,
    stable_fraction,
)


def cands(agreements: list[float | None]) -> list[ReviewCandidate]:
    return [ReviewCandidate(str(i), a) for i, a in enumerate(agreements)]


def test_low_agreement_first_takes_the_lowest() -> None:
    picks = select_for_review(cands([0.9, 0.3, 1.0, 0.5, None, 0.4]), 3, random_share=0.0,
                              rng=np.random.default_rng(0))
    assert [p.item for p in picks] == ["1", "5", "3"]
    assert {p.rule for p in picks} == {"low_agreement"} and "0.30" in picks[0].reason


def test_unknown_agreement_comes_last_and_budget_caps_at_the_pool() -> None:
    picks = select_for_review(cands([None, 0.8]), 10, random_share=0.0, rng=np.random.default_rng(0))
    assert [p.item for p in picks] == ["1", "0"]


def test_random_share_is_a_uniform_draw_of_the_budget() -> None:
    pool = cands([i / 1000 for i in range(1000)])
    picks = select_for_review(pool, 100, random_share=0.2, rng=np.random.default_rng(1))
    rules = [p.rule for p in picks]
    assert rules.count("random") == 20 and rules.count("low_agreement") == 80 and len({p.item for p in picks}) == 100
    lowest = {str(i) for i in range(100)}
    random_items = {p.item for p in picks if p.rule == "random"}
    assert len(random_items & lowest) < 10  # drawn from everywhere, not the bottom
    low_items = [p.item for p in picks if p.rule == "low_agreement"]
    assert max(int(i) for i in low_items) < 110  # the rest fills from the bottom up (minus what random took)


def test_ties_in_agreement_are_broken_at_random() -> None:
    pool = cands([0.5] * 50)
    a = [p.item for p in select_for_review(pool, 5, random_share=0.0, rng=np.random.default_rng(1))]
    b = [p.item for p in select_for_review(pool, 5, random_share=0.0, rng=np.random.default_rng(2))]
    assert a != b


def test_new_annotators_and_llm_disagreements_are_always_reviewed_outside_the_budget() -> None:
    pool = [ReviewCandidate("a", 1.0, new_annotators=("7",)), ReviewCandidate("b", 1.0, llm_reason="not entailed"),
            ReviewCandidate("c", 0.1), ReviewCandidate("d", 0.2)]
    picks = select_for_review(pool, 1, random_share=0.0, rng=np.random.default_rng(0))
    assert [(p.item, p.rule) for p in picks] == [("a", "new_annotator"), ("b", "llm_disagrees"),
                                                 ("c", "low_agreement")]
    assert "not entailed" in picks[1].reason and picks[0].evidence["annotators"] == ["7"]


def test_bad_share_is_refused() -> None:
    with pytest.raises(ValueError, match="random_share"):
        select_for_review([], 1, random_share=1.5, rng=np.random.default_rng(0))


def test_budget_follows_the_rate_over_time() -> None:
    assert review_budget(0.05, 100, 0) == 5
    assert review_budget(0.05, 100, 5) == 0
    assert review_budget(0.05, 139, 5) == 1
    assert review_budget(0.0, 1000, 0) == 0


def test_error_rate_estimate_has_a_wilson_interval() -> None:
    est = error_rate_estimate([True] * 10 + [False] * 90)
    assert est["error_rate"] == pytest.approx(0.1) and est["low"] < 0.1 < est["high"]
    assert error_rate_estimate([])["error_rate"] is None


def test_audit_sampling_priorities_and_a_stable_rate() -> None:
    pool = [AuditCandidate("low", agreement=0.3), AuditCandidate("flag", agreement=0.9, flagged=True),
            AuditCandidate("new", agreement=0.9, new_annotator=True)]
    pool += [AuditCandidate(f"u{i}", agreement=1.0) for i in range(2000)]
    chosen = select_for_audit(pool, 0.1, low_agreement_below=0.5, salt="p1")
    reasons = dict((c.unique_id, r) for c, r in chosen)
    assert reasons["low"] == "low_agreement" and reasons["flag"] == "flagged_annotator" \
        and reasons["new"] == "new_annotator"
    rest = sum(1 for r in reasons.values() if r == "random")
    assert 150 < rest < 250  # about 10 % of 2,000
    assert chosen == select_for_audit(pool, 0.1, low_agreement_below=0.5, salt="p1")  # same draw every time
    assert select_for_audit(pool[3:], 0.0, low_agreement_below=0.5) == []
    assert 0.0 <= stable_fraction("x") < 1.0


def test_policy_review_section() -> None:
    assert DEFAULT_POLICY.review.tier == "reviewer" and DEFAULT_POLICY.review.llm_audit_rate == 0.0
    p = parse_policy({"review": {"rate": 0.2, "random_share": 0.5, "llm_audit_rate": 0.1}})
    assert (p.review.rate, p.review.random_share, p.review.llm_audit_rate) == (0.2, 0.5, 0.1)
    assert parse_policy({"review": {"tier": None}}).review.tier is None
    # A ladder without a "reviewer" tier has no review unless a tier is named.
    ladder = {"qualification": None, "escalation": {"difficulty_above": None},
              "tiers": [{"name": "a"}, {"name": "b"}]}
    assert parse_policy(ladder).review.tier is None
    assert parse_policy({**ladder, "review": {"tier": "b"}}).review.tier == "b"
    with pytest.raises(PolicyError) as err:
        parse_policy({"review": {"tier": "boss", "rate": 2, "new_annotator_tasks": -1, "colour": 1}})
    text = str(err.value)
    for expected in ("review.tier: must name a tier", "review.rate: must be a number in [0.0, 1.0]",
                     "review.new_annotator_tasks: must be an integer >= 0", "review.colour: unknown key"):
        assert expected in text, text
