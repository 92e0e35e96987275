import dataclasses
import json
import threading

import pytest

from qa_hooks.events import Event, TaskInfo
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger
from qa_hooks.scoring import Contribution
from qa_hooks.store import SubmissionStore
from scripts.replay import replay
from scripts.seed import label_config
from tests.test_scoring import sub

CONFIG = label_config("text_classification")
PROJECT_INFO = {"label_config": CONFIG, "control_weights": {"sentiment": {"overall": 1.0}}}


def send(connection, *subs, tasks=()):
    event = Event("ANNOTATIONS_CREATED" if subs else "TASKS_CREATED", 1, PROJECT_INFO, submissions=list(subs),
                  tasks=list(tasks))
    return process_event(event.to_dict(), "t", connection)


def record_sums(contribution: Contribution) -> dict[str, float]:
    """What one task's contribution adds to its annotator's running record, written out as the oracle."""
    return {
        "gold_n": float(contribution.gold is not None),
        "gold_sum": contribution.gold or 0.0,
        "peer_n": float(contribution.peer is not None),
        "peer_sum": contribution.peer or 0.0,
        "pair_n": float(contribution.pair_n),
        "pair_sum": contribution.pair_sum,
    }


def assert_totals_match_contributions(connection):
    """Incremental invariant: each annotator's running sums equal the sum of their per-task contributions."""
    totals: dict[int, dict[str, float]] = {}
    for key in connection.scan_iter("t:p:1:task:*:contrib"):
        for annotator, raw in connection.hgetall(key).items():
            sums = record_sums(Contribution.from_dict(json.loads(raw)))
            row = totals.setdefault(int(annotator), dict.fromkeys(sums, 0.0))
            for name, value in sums.items():
                row[name] += value
    assert totals, "no contributions stored"
    for annotator, expected in totals.items():
        stored = {k.decode(): float(v) for k, v in connection.hgetall(f"t:p:1:annotator:{annotator}:stats").items()}
        for name, value in expected.items():
            assert stored.get(name, 0.0) == pytest.approx(value, abs=1e-9), (annotator, name)


def test_gold_from_meta_scores_every_submission_on_arrival(redis_conn):
    send(redis_conn, tasks=[TaskInfo(1, {"text": "x"}, {"gold": "Positive"}), TaskInfo(2, {"text": "y"}, {})])
    send(redis_conn, sub(1, "Positive", task=1), sub(2, "Negative", task=1), sub(1, "Negative", task=2))
    ledger = Ledger(redis_conn, "t")
    good, bad = ledger.reliability(1, 1), ledger.reliability(1, 2)
    assert (good.gold_n, good.gold_accuracy) == (1, 1.0)
    assert (bad.gold_n, bad.gold_accuracy) == (1, 0.0)
    assert bad.confusion == {"Positive": {"Negative": 1.0}}
    assert good.gold_low < 2 / 3 < good.gold_high  # Beta(1 + 1, 1 + 0) around its mean
    assert good.mean > bad.mean
    assert ledger.task_score(1, 1)["n"] == 2
    assert_totals_match_contributions(redis_conn)


def test_ground_truth_annotation_becomes_gold_and_unmarking_removes_it(redis_conn):
    truth = sub(9, "Negative", ground_truth=True)
    send(redis_conn, sub(1, "Negative"), sub(2, "Positive"), truth)
    ledger = Ledger(redis_conn, "t")
    assert ledger.gold(1, 1, CONFIG) == truth.result
    assert ledger.reliability(1, 1).gold_accuracy == 1.0
    assert 9 not in {int(a) for a in redis_conn.hkeys("t:p:1:task:1:contrib")}  # gold is not a peer
    unmarked = dataclasses.replace(truth, ground_truth=False, updated_at="2026-02-01T00:00:00Z")
    send(redis_conn, unmarked)
    assert ledger.gold(1, 1, CONFIG) is None
    assert ledger.reliability(1, 1).gold_n == 0
    assert_totals_match_contributions(redis_conn)


def test_rescoring_twice_changes_nothing(redis_conn):
    send(redis_conn, sub(1, "Positive"), sub(2, "Positive"), sub(3, "Negative"))

    def flat():
        return {(k, f): float(v) for k in redis_conn.scan_iter("t:p:1:annotator:*:stats")
                for f, v in redis_conn.hgetall(k).items()}

    before = flat()
    Ledger(redis_conn, "t").rescore(1, 1)
    assert flat() == pytest.approx(before)


def test_deletion_takes_the_task_out_of_the_record(redis_conn):
    send(redis_conn, sub(1, "Positive"), sub(2, "Negative"))
    assert Ledger(redis_conn, "t").reliability(1, 1).peer_n == 1
    process_event(Event("ANNOTATIONS_DELETED", 1, deleted_annotations=[2]).to_dict(), "t", redis_conn)
    record = Ledger(redis_conn, "t").reliability(1, 1)
    assert record.peer_n == 0 and record.peer_agreement is None
    assert_totals_match_contributions(redis_conn)


def test_concurrent_rescoring_never_double_counts(redis_conn, redis_service):
    import redis as redis_lib

    send(redis_conn, *[sub(a, "Positive" if a % 3 else "Negative") for a in range(1, 8)])
    store = SubmissionStore(redis_conn, "t")

    def hammer(k):
        connection = redis_lib.Redis.from_url(redis_service.url)
        ledger = Ledger(connection, "t")
        for i in range(15):
            if k == 0:  # one writer keeps changing the task underneath the others
                store.record(sub(1, ["Positive", "Negative"][i % 2], updated=f"2026-03-01T00:00:{i:02d}Z"))
            ledger.rescore(1, 1)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    Ledger(redis_conn, "t").rescore(1, 1)
    assert_totals_match_contributions(redis_conn)
    assert Ledger(redis_conn, "t").reliability(1, 2).peer_n == 1


def test_replay_ranks_workers_by_their_true_accuracy(redis_conn):
    result = replay("temp", redis_conn, gold_fraction=0.1, seed=1, prefix="t")
    assert result.submissions == 4620
    assert result.consensus_accuracy >= 0.93  # majority vote reaches 0.933 on this set
    assert result.spearman(min_labels=20) > 0.7
    revealed = [r for r in result.reliabilities.values() if r.gold_n > 0]
    assert revealed, "a tenth of the items were gold"
