import dataclasses

from qa_hooks.jobs import refresh_flags
from qa_hooks.ledger import Ledger
from qa_hooks.signals import annotator_flags, class_prior, given_counts
from tests.test_ledger import send
from tests.test_scoring import sub

QUIET = {"gold_n": 0, "gold_high": None, "evidence": 0.0, "reliability_high": 1.0}


def names(**kw):
    base = {"lead_times": [], "project_lead_times": [], "given": {}, "class_prior": {}, **QUIET, **kw}
    return [f.name for f in annotator_flags(**base)]


def test_too_fast_is_relative_to_the_project():
    assert names(lead_times=[1.0] * 12, project_lead_times=[10.0] * 100) == ["too_fast"]
    assert names(lead_times=[4.0] * 12, project_lead_times=[10.0] * 100) == []
    assert names(lead_times=[1.0] * 5, project_lead_times=[10.0] * 100) == []  # too little evidence


def test_one_option_only_against_the_class_prior():
    given = {"yes": 19.0, "no": 1.0}
    assert names(given=given, class_prior={"yes": 0.5, "no": 0.5}) == ["one_option"]
    assert names(given=given, class_prior={"yes": 0.88, "no": 0.12}) == []  # the truth is mostly "yes"


def test_gold_and_peer_rules():
    assert names(**{**QUIET, "gold_n": 6, "gold_high": 0.4}) == ["fails_gold"]
    assert names(**{**QUIET, "gold_n": 3, "gold_high": 0.2}) == []
    assert names(**{**QUIET, "evidence": 30.0, "reliability_high": 0.5}) == ["disagrees_with_peers"]


def test_prior_and_given_from_confusion_counts():
    confusions = [{"a": {"a": 3.0, "b": 1.0}}, {"b": {"b": 4.0}}]
    assert class_prior(confusions) == {"a": 0.5, "b": 0.5}
    assert given_counts(confusions[0]) == {"a": 3.0, "b": 1.0}


def test_a_fast_single_option_spammer_is_flagged_and_careful_annotators_are_not(redis_conn):
    truth = ["Positive", "Negative"] * 15
    for task, label in enumerate(truth, start=1):
        subs = [dataclasses.replace(sub(a, label, task=task), lead_time=8.0 + a, unique_id=f"{task}-{a}")
                for a in (1, 2, 3)]
        spam = dataclasses.replace(sub(9, "Positive", task=task), lead_time=0.8, unique_id=f"{task}-9")
        send(redis_conn, *subs, spam)
    flagged = refresh_flags("t", redis_conn)[1]
    assert set(flagged) == {9}
    assert {"too_fast", "one_option"} <= set(flagged[9])
    assert [f.name for f in Ledger(redis_conn, "t").flags(1, 9)] == flagged[9]
    assert Ledger(redis_conn, "t").flags(1, 1) == []
