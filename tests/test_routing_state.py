"""Routing state in a private Redis (routing/state.py): policies, tiers, exam attempts, routes, load."""

from __future__ import annotations

import threading

import pytest

from routing.policy import DEFAULT_POLICY, PolicyError
from routing.state import DEFAULT_POLICY_FILE, RoutingState

POLICY = """
tiers:
  - {name: qualification}
  - {name: tier1}
  - {name: tier2, final_say: true}
qualification: {exam_tasks: 3, pass_mark: 0.66, max_retries: 1}
"""


@pytest.fixture
def state(redis_conn) -> RoutingState:
    return RoutingState(redis_conn, "t")


def test_policy_defaults_to_the_shipped_file_and_binds_per_project(state) -> None:
    text, origin = state.policy_source(1)
    assert origin == str(DEFAULT_POLICY_FILE) and "tiers:" in text
    assert state.policy(1).tier_names == DEFAULT_POLICY.tier_names
    state.set_policy(1, POLICY, origin="mine.yaml")
    assert state.policy(1).tier_names == ("qualification", "tier1", "tier2")
    assert state.policy_source(1)[1] == "mine.yaml"
    assert state.policy(2).tier_names == DEFAULT_POLICY.tier_names  # other projects unaffected
    state.unset_policy(1)
    assert state.policy(1).tier_names == DEFAULT_POLICY.tier_names


def test_an_invalid_policy_is_refused_and_nothing_is_stored(state) -> None:
    with pytest.raises(PolicyError, match=r"overlap\.max"):
        state.set_policy(1, "overlap: {min: 3, max: 2}")
    assert state.policy_source(1)[1] == str(DEFAULT_POLICY_FILE)


def test_escalation_projects_follow_their_source_policy(state) -> None:
    state.set_policy(1, POLICY)
    state.link_tier_project(1, "tier2", 7)
    assert state.tier_project(1, "tier2") == 7 and state.tier_project(1, "tier1") is None
    assert state.tier_project_link(7) == (1, "tier2") and state.tier_project_link(1) is None
    assert state.policy(7).tier_names == ("qualification", "tier1", "tier2")
    state.link_tier_task(7, 70, 10)
    assert state.source_task(7, 70) == 10 and state.source_task(7, 71) is None


def test_tiers_default_to_the_first_and_change_by_compare_and_set(state) -> None:
    policy = state.set_policy(1, POLICY)
    assert state.annotator(1, 5, policy).tier == "qualification"
    assert state.change_tier(1, 5, 0, "tier1")
    record = state.annotator(1, 5, policy)
    assert (record.tier, record.version) == ("tier1", 1)
    assert not state.change_tier(1, 5, 0, "tier2")  # decided at v0, applied once already
    assert state.tiers(1) == {5: "tier1"}
    assert state.set_tier(1, 5, "tier2") == 2


def test_failed_exam_counts_an_attempt_and_spends_its_tasks(state) -> None:
    policy = state.set_policy(1, POLICY)
    assert state.change_tier(1, 5, 0, "qualification", failed_exam=True, exam_tasks=[11, 12, 13])
    record = state.annotator(1, 5, policy)
    assert (record.tier, record.exam_attempts) == ("qualification", 1)
    assert state.exam_used(1, 5) == {11, 12, 13}
    assert state.change_tier(1, 5, 1, "qualification", reset_exam=True, exam_tasks=[14])
    assert state.exam_used(1, 5) == {11, 12, 13, 14} and state.annotator(1, 5, policy).exam_attempts == 1


def test_claim_lets_one_action_through_and_its_retry(state) -> None:
    assert state.route(1, 2).version == 0
    first = state.claim(1, 2, 0, "escalate:tier2:v0")
    assert first is not None and (first.version, first.claim) == (1, "escalate:tier2:v0")
    assert state.claim(1, 2, 0, "final:v0") is None  # the same decision point, another action: refused
    again = state.claim(1, 2, 0, "escalate:tier2:v0")  # a retry of the winner resumes
    assert again is not None and again.version == 1
    assert state.claim(1, 2, 1, "final:v1").version == 2


def test_concurrent_claims_let_exactly_one_win(state, redis_service) -> None:
    import redis

    wins = []

    def grab(key: str) -> None:
        mine = RoutingState(redis.Redis.from_url(redis_service.url), "t")
        if mine.claim(1, 3, 0, key) is not None:
            wins.append(key)

    threads = [threading.Thread(target=grab, args=(f"k{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and state.route(1, 3).claim == wins[0]


def test_route_fields_and_deadlines(state) -> None:
    state.claim(1, 2, 0, "x")
    route = state.update_route(1, 2, status="escalated", required_tier="tier2", escalations=1, escalated_at=100.0,
                               deadline=200.0, assigned=9, tier_project=7, tier_task=70)
    assert (route.status, route.required_tier, route.escalations, route.assigned) == ("escalated", "tier2", 1, 9)
    assert (route.escalated_at, route.deadline, route.tier_project, route.tier_task) == (100.0, 200.0, 7, 70)
    assert state.due(now=150) == [] and state.due(now=250) == [(1, 2)]
    route = state.update_route(1, 2, assigned=None)
    assert route.assigned is None and route.tier_task == 70
    state.update_route(1, 2, status="final", final_label="Positive")
    assert state.due(now=250) == [] and state.route(1, 2).final_label == "Positive"
    with pytest.raises(ValueError, match="unknown route fields"):
        state.update_route(1, 2, colour="red")
    assert state.routes(1, [2, 3])[3].status == "open"


def test_load_is_a_set_of_open_assignments(state) -> None:
    state.assign(9, 1, 2)
    state.assign(9, 1, 2)  # idempotent
    state.assign(9, 1, 3)
    state.assign(8, 4, 5)
    assert state.loads([9, 8, 7]) == {9: 2, 8: 1, 7: 0}
    state.release(9, 1, 2)
    state.release(9, 1, 2)
    assert state.loads([9]) == {9: 1}


def test_activity_flags_views_users_and_write_backs(state) -> None:
    state.touch([1, 2], now=50.0)
    assert state.last_seen([1, 2, 3]) == {1: 50.0, 2: 50.0, 3: None}
    state.flag_annotator(1, 4, "copies answers")
    assert state.flagged(1) == {4: "copies answers"}
    state.unflag_annotator(1, 4)
    assert state.flagged(1) == {}
    assert state.flag_submission(1, "u1", {"why": "below tier"})
    assert not state.flag_submission(1, "u1", {"why": "again"})
    assert state.flagged_submissions(1) == {"u1": {"why": "below tier"}}
    state.set_view(7, "c@x", 3)
    assert state.view(7, "c@x") == 3 and state.view(7, "d@x") is None
    state.cache_users({1: "a@x"})
    assert state.emails([1, 2]) == {1: "a@x", 2: None}
    state.set_written_back(7, "u9", 55)
    assert state.written_back(7, "u9") == 55 and state.written_back(7, "u8") is None
    state.set_edition(1, "community")
    assert state.edition(1) == "community" and state.edition(2) is None
    assert not state.prepared(1)
    state.set_prepared(1)
    assert state.prepared(1)


def test_policy_console_script(redis_service, redis_conn, tmp_path, capsys) -> None:
    from routing.audit import AuditLog
    from routing.cli import policy_main

    common = ["--redis-url", redis_service.url, "--prefix", "t"]
    good, bad = tmp_path / "good.policy.yaml", tmp_path / "bad.policy.yaml"
    good.write_text(POLICY)
    bad.write_text("overlap: {min: 3, max: 2}\nsurprise: 1\n")
    assert policy_main(["check", str(good)]) == 0
    assert "qualification -> tier1 -> tier2" in capsys.readouterr().out
    assert policy_main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "overlap.max: must be >= overlap.min" in err and "surprise: unknown key" in err
    assert policy_main([*common, "set", "4", str(bad)]) == 1
    assert policy_main([*common, "set", "4", str(good)]) == 0
    state = RoutingState(redis_conn, "t")
    assert state.policy(4).tier_names == ("qualification", "tier1", "tier2")
    capsys.readouterr()
    assert policy_main([*common, "show", "4"]) == 0
    assert str(good.resolve()) in capsys.readouterr().out
    assert policy_main([*common, "tier", "4", "9", "tier2", "--reason", "expert hire"]) == 0
    from rq import Queue

    from core.settings import current

    queued = Queue(current().routing_queue, connection=redis_conn).jobs
    assert [j.func_name for j in queued] == ["routing.exam.sync_gold_offer"]  # their gold offer, at once
    assert policy_main([*common, "tier", "4", "9", "gold-star"]) == 1
    assert state.tiers(4) == {9: "tier2"}
    capsys.readouterr()
    assert policy_main([*common, "tiers", "4"]) == 0
    assert capsys.readouterr().out == "9\ttier2\n"
    assert policy_main([*common, "unset", "4"]) == 0
    assert state.policy(4).tier_names == DEFAULT_POLICY.tier_names
    actions = [e.action for e in AuditLog(redis_conn, "t").query(project=4)]
    assert actions == ["set_policy", "set_tier", "unset_policy"]
    assert AuditLog(redis_conn, "t").query(annotator=9)[0].evidence == {"from": "qualification", "to": "tier2",
                                                                         "version": 1}


def test_flagging_an_annotator_by_hand(redis_service, redis_conn, capsys) -> None:
    from routing.audit import AuditLog
    from routing.cli import policy_main

    common = ["--redis-url", redis_service.url, "--prefix", "t"]
    state = RoutingState(redis_conn, "t")
    with pytest.raises(SystemExit):
        policy_main([*common, "flag", "4", "9"])  # a flag needs its reason
    assert policy_main([*common, "flag", "4", "9", "--reason", "copies answers from a forum"]) == 0
    assert state.flagged(4) == {9: "copies answers from a forum"}
    assert state.annotator(4, 9, state.policy(4)).flagged == "copies answers from a forum"  # routing reads this
    assert policy_main([*common, "unflag", "4", "9"]) == 0
    assert state.flagged(4) == {} and state.annotator(4, 9, state.policy(4)).flagged is None
    assert policy_main([*common, "unflag", "4", "9"]) == 1  # nothing to remove
    assert "not flagged" in capsys.readouterr().err
    entries = AuditLog(redis_conn, "t").query(project=4, annotator=9)
    assert [(e.kind, e.action) for e in entries] == [("flag", "flag_annotator"), ("action", "unflag_annotator")]
    assert entries[0].reason == "copies answers from a forum"


def test_tiers_at_submission_keep_the_first_tier_seen(state) -> None:
    assert state.tiers_at_submission(1, [("u1", 7), ("u2", 8)], {7: "tier1"}, "qualification") == \
        {"u1": "tier1", "u2": "qualification"}
    assert state.tiers_at_submission(1, [("u1", 7), ("u3", 7)], {7: "tier2"}, "qualification") == \
        {"u1": "tier1", "u3": "tier2"}
    assert state.tiers_at_submission(1, [], {}, "qualification") == {}
