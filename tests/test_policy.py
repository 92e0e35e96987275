"""Policy file parsing and validation (routing/policy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing.policy import (
    DEFAULT_POLICY,
    DemoteRule,
    Policy,
    PolicyError,
    PromoteRule,
    Tier,
    labeling_cost,
    load_policy,
    parse_policy,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "label_configs" / "default.policy.yaml"


def errors_of(source: object) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(source)  # type: ignore[arg-type]
    return info.value.errors


def test_example_file_validates_and_equals_the_built_in_defaults() -> None:
    assert load_policy(EXAMPLE) == DEFAULT_POLICY


@pytest.mark.parametrize("source", [None, {}, "", "# only a comment\n"])
def test_empty_policy_is_the_default(source: object) -> None:
    assert parse_policy(source) == DEFAULT_POLICY  # type: ignore[arg-type]


def test_defaults_are_as_documented() -> None:
    p = DEFAULT_POLICY
    assert p.tier_names == ("qualification", "tier1", "tier2", "reviewer")
    assert p.first_labeling_tier == "tier1"
    assert p.tiers[2].promote == PromoteRule(min_gold=30, min_lower=0.85)
    assert p.tiers[2].demote == DemoteRule(max_upper=0.75)
    assert p.tiers[3].final_say and p.tiers[3].promote is None
    assert p.qualification is not None and p.qualification.exam_tasks == 10
    assert (p.overlap.min, p.overlap.max, p.overlap.stop.rule) == (2, 5, "posterior")
    assert p.escalation.difficult_start_tier == "tier2"
    assert p.sla.deadline_seconds == 86400 and p.sla.on_breach == "escalate"


def test_full_custom_policy_round_trip() -> None:
    text = """
    hysteresis_margin: 0.1
    tiers:
      - {name: newbie}
      - {name: regular, wage: 0.02, demote: {max_upper: 0.5}}
      - {name: expert, wage: 0.1, promote: {min_gold: 5, min_lower: 0.9}, demote: {max_upper: 0.8}}
    qualification: {exam_tasks: 3, pass_mark: 0.66, max_retries: 0}
    gold: {share: 0.0}
    overlap: {min: 3, max: 3, stop: {rule: fixed}}
    escalation:
      agreement_below: null
      difficulty_above: 0.9
      difficult_start_tier: expert
      on_flagged_annotator: false
      max_escalations: 0
    sla: {deadline_seconds: null, on_breach: alert}
    """
    p = parse_policy(text)
    assert p.hysteresis_margin == 0.1
    assert p.tiers[2] == Tier("expert", 0.1, PromoteRule(5, 0.9), DemoteRule(0.8))
    assert p.qualification is not None and p.qualification.max_retries == 0
    assert p.gold_share == 0.0
    assert p.overlap.stop.rule == "fixed" and p.overlap.max == 3
    assert p.escalation.agreement_below is None and p.escalation.max_escalations == 0
    assert p.sla.deadline_seconds is None and p.sla.on_breach == "alert"


def test_margin_and_posterior_rules() -> None:
    assert parse_policy({"overlap": {"stop": {"rule": "margin", "k": 3}}}).overlap.stop.k == 3
    stop = parse_policy({"overlap": {"stop": {"threshold": 0.95, "min_agreeing": 1, "worker_model": "one_coin"}}})
    assert (stop.overlap.stop.threshold, stop.overlap.stop.min_agreeing) == (0.95, 1)
    assert stop.overlap.stop.worker_model == "one_coin"


def test_crowd_matched_threshold_settings() -> None:
    stop = parse_policy({"overlap": {"stop": {"match_overlap": 3, "match_lead": 0.01, "match_min_labels": 50}}})
    assert (stop.overlap.stop.match_overlap, stop.overlap.stop.match_lead) == (3, 0.01)
    assert stop.overlap.stop.match_min_labels == 50
    assert parse_policy({"overlap": {"stop": {"match_overlap": None}}}).overlap.stop.match_overlap is None


def test_no_exam_means_first_tier_labels() -> None:
    p = parse_policy(
        {
            "qualification": None,
            "tiers": [{"name": "crowd"}, {"name": "pro", "promote": {"min_gold": 1, "min_lower": 0.5}}],
        }
    )
    assert p.qualification is None
    assert p.first_labeling_tier == "crowd"
    assert p.escalation.difficult_start_tier == "pro"  # default: one above the first labeling tier


def test_path_qualified_type_errors_are_all_reported() -> None:
    errs = errors_of(
        {
            "tiers": [
                {"name": "q"},
                {"name": "t1"},
                {"name": "t2", "promote": {"min_gold": "x", "min_lower": 1.5}, "wage": -1},
            ],
            "overlap": {"min": 0, "max": True},
        }
    )
    assert "tiers[2].promote.min_gold: must be an integer >= 0, got 'x'" in errs
    assert any(e.startswith("tiers[2].promote.min_lower: must be a number in [0.0, 1.0]") for e in errs)
    assert any(e.startswith("tiers[2].wage: must be a number") for e in errs)
    assert "overlap.min: must be an integer >= 1, got 0" in errs
    assert "overlap.max: must be an integer >= 1, got True" in errs  # booleans are not integers


def test_error_message_names_source_and_lists_errors() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy({"gold": {"share": 1}}, origin="p.yaml")
    assert "invalid policy p.yaml" in str(info.value)
    assert "gold.share: must be a number in [0.0, 1.0)" in str(info.value)


def test_hysteresis_margin_is_enforced() -> None:
    tiers = [
        {"name": "q"},
        {"name": "a"},
        {"name": "b", "promote": {"min_gold": 1, "min_lower": 0.8}, "demote": {"max_upper": 0.76}},
    ]
    errs = errors_of({"tiers": tiers})
    assert errs == [
        "tiers[2]: promote.min_lower 0.8 must exceed demote.max_upper 0.76 by hysteresis_margin 0.05 (gap 0.04)"
    ]
    # Exactly the margin is fine (float noise tolerated); a smaller margin setting also accepts the tier.
    tiers[2]["demote"] = {"max_upper": 0.75}
    assert parse_policy({"tiers": tiers}).tiers[2].demote == DemoteRule(0.75)
    tiers[2]["demote"] = {"max_upper": 0.79}
    assert parse_policy({"tiers": tiers, "hysteresis_margin": 0.01}).hysteresis_margin == 0.01


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"bogus": 1}, "bogus: unknown key"),
        (
            {"overlap": {"stop": {"rule": "magic"}}},
            "overlap.stop.rule: must be one of ['fixed', 'margin', 'posterior']",
        ),
        (
            {"overlap": {"stop": {"rule": "margin", "threshold": 0.9}}},
            "overlap.stop.threshold: only applies to rule 'posterior'",
        ),
        ({"overlap": {"stop": {"rule": "posterior", "k": 2}}}, "overlap.stop.k: only applies to rule 'margin'"),
        ({"overlap": {"stop": {"threshold": 1.0}}}, "overlap.stop.threshold: must be a number in (0.0, 1.0)"),
        ({"overlap": {"min": 4, "max": 3}}, "overlap.max: must be >= overlap.min (4), got 3"),
        ({"overlap": {"max": 1}}, "overlap.max: must be >= overlap.min (2), got 1"),
        ({"overlap": {"min": 1, "max": 1, "stop": {"min_agreeing": 2}}}, "overlap.stop.min_agreeing: can never be met"),
        ({"overlap": {"stop": {"worker_model": "glad"}}}, "overlap.stop.worker_model: must be one of"),
        ({"overlap": {"stop": {"match_overlap": 0}}}, "overlap.stop.match_overlap: must be an integer >= 1, got 0"),
        ({"overlap": {"stop": {"match_lead": 1}}}, "overlap.stop.match_lead: must be a number in [0.0, 1.0)"),
        (
            {"overlap": {"stop": {"rule": "margin", "match_overlap": 5}}},
            "overlap.stop.match_overlap: only applies to rule 'posterior'",
        ),
        ({"overlap": "lots"}, "overlap: must be a mapping, got 'lots'"),
        ({"tiers": []}, "tiers: must be a non-empty list"),
        ({"tiers": [{"name": "only"}]}, "tiers: with a qualification exam there must be a tier to qualify into"),
        ({"tiers": [{"name": "a"}, {"name": "a"}]}, "tiers[1].name: duplicate tier name 'a'"),
        ({"tiers": [{"name": ""}, {"name": "b"}]}, "tiers[0].name: must be a non-empty string"),
        ({"tiers": [{"name": "a", "demote": {"max_upper": 0.1}}, {"name": "b"}]}, "tiers[0]: the first tier"),
        ({"tiers": ["a", {"name": "b"}]}, "tiers[0]: must be a mapping, got 'a'"),
        (
            {"tiers": [{"name": "a"}, {"name": "b", "promote": {"min_gold": 1, "min_lower": 0.5}}]},
            "tiers[1].promote: annotators enter",
        ),
        ({"tiers": [{"name": "a"}, {"name": "b", "final_say": "yes"}]}, "tiers[1].final_say: must be true or false"),
        (
            {"tiers": [{"name": "a"}, {"name": "b", "demote": {"max_upper": 0.3, "min": 1}}]},
            "tiers[1].demote.min: unknown key",
        ),
        ({"qualification": {"pass_mark": 2}}, "qualification.pass_mark: must be a number in [0.0, 1.0]"),
        ({"qualification": {"exam_tasks": 0}}, "qualification.exam_tasks: must be an integer >= 1, got 0"),
        ({"escalation": {"difficult_start_tier": "gurus"}}, "escalation.difficult_start_tier: must name a tier"),
        (
            {"escalation": {"difficult_start_tier": "qualification"}},
            "escalation.difficult_start_tier: must be a labeling tier",
        ),
        ({"escalation": {"max_escalations": -1}}, "escalation.max_escalations: must be an integer >= 0"),
        ({"escalation": {"on_flagged_annotator": 1}}, "escalation.on_flagged_annotator: must be true or false"),
        ({"sla": {"deadline_seconds": 0}}, "sla.deadline_seconds: must be a number in (0.0, inf)"),
        ({"sla": {"on_breach": "page"}}, "sla.on_breach: must be one of ['escalate', 'alert']"),
        ({"version": 2}, "version: must be 1, got 2"),
        ({"hysteresis_margin": "wide"}, "hysteresis_margin: must be a number in [0.0, 1.0]"),
        ([1, 2], "<policy>: must be a mapping, got [1, 2]"),
        ("tiers: [", "<yaml>:"),
    ],
)
def test_validation_errors(source: object, expected: str) -> None:
    errs = errors_of(source)
    assert any(e.startswith(expected) for e in errs), errs


def test_difficulty_trigger_needs_a_start_tier() -> None:
    errs = errors_of({"qualification": None, "tiers": [{"name": "solo"}]})
    assert errs == ["escalation.difficult_start_tier: is needed when escalation.difficulty_above is set"]
    p = parse_policy({"qualification": None, "tiers": [{"name": "solo"}], "escalation": {"difficulty_above": None}})
    assert p.escalation.difficult_start_tier is None


def test_tier_lookup_and_cost_report() -> None:
    p = DEFAULT_POLICY
    assert p.tier_index("tier2") == 2 and p.tier("reviewer").final_say
    with pytest.raises(ValueError, match="unknown tier 'nope'"):
        p.tier_index("nope")
    cost = labeling_cost(p, {"tier1": 100, "tier2": 10})
    assert cost == pytest.approx({"tier1": 5.0, "tier2": 0.8, "total": 5.8})


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "project.policy.yaml"
    path.write_text("overlap: {max: 7}\n")
    assert load_policy(path).overlap.max == 7
    path.write_text("overlap: {max: zero}\n")
    with pytest.raises(PolicyError, match=r"project\.policy\.yaml"):
        load_policy(path)


def test_policy_is_immutable() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_POLICY.gold_share = 0.5  # type: ignore[misc]
    assert isinstance(DEFAULT_POLICY, Policy)
