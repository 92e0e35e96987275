import itertools
import math

import numpy as np
import pandas as pd
import pytest

from core.label_config import LabelConfig
from qa_hooks.events import Submission
from qa_hooks.scoring import categorical, label_of, score_task
from qa_hooks.truth import log_odds_weights, weighted_vote
from scripts.seed import label_config

SENTIMENT = label_config("text_classification")
NER = label_config("ner")


def sub(annotator, label=None, *, task=1, result=None, updated="2026-01-01T00:00:00Z", **kw):
    if result is None:
        result = [] if label is None else [
            {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
    return Submission(project=1, task=task, annotation_id=annotator, unique_id=f"u{annotator}-{updated}",
                      annotator=annotator, result=result, updated_at=updated, created_at=updated, **kw)


def test_categorical_only_for_one_single_choice_control():
    assert categorical(SENTIMENT).classes == ("Positive", "Negative", "Neutral")
    assert categorical(label_config("multi_label")) is None
    assert categorical(NER) is None


def test_gold_scores_and_hard_confusion_counts():
    gold = sub(99, "Positive").result
    score = score_task([sub(1, "Positive"), sub(2, "Negative")], gold, SENTIMENT, None, {})
    assert score.contributions[1].gold == 1.0 and score.contributions[2].gold == 0.0
    assert score.contributions[2].confusion == {"Positive\tNegative": 1.0}


def test_peers_judge_each_other_and_the_dissenter_loses():
    subs = [sub(1, "Positive"), sub(2, "Positive"), sub(3, "Positive"), sub(4, "Negative")]
    score = score_task(subs, None, SENTIMENT, None, {})
    assert score.contributions[1].peer > 0.5 > score.contributions[4].peer
    assert score.consensus == "Positive" and score.agreement == pytest.approx(3 / 6)
    assert score.consensus_share == 0.75 and score.consensus_reached
    # soft confusion counts sum to one task's worth per annotator
    assert sum(score.contributions[4].confusion.values()) == pytest.approx(1.0)


def test_a_reliable_dissenter_outweighs_two_weak_annotators():
    subs = [sub(1, "Positive"), sub(2, "Positive"), sub(3, "Negative")]
    score = score_task(subs, None, SENTIMENT, None, {1: 0.4, 2: 0.4, 3: 0.97})
    assert score.consensus == "Negative"


def test_skips_gold_annotations_and_old_versions_are_not_peers():
    subs = [sub(1, "Positive", updated="2026-01-01T00:00:00Z"), sub(1, "Negative", updated="2026-01-02T00:00:00Z"),
            sub(2, was_cancelled=True), sub(3, "Positive", ground_truth=True), sub(4, "Negative")]
    score = score_task(subs, None, SENTIMENT, None, {})
    assert set(score.contributions) == {1, 4}
    assert score.agreement == 1.0  # annotator 1's latest answer agrees with 4


def test_consensus_matches_weighted_vote_with_log_odds_weights():
    """The one-coin posterior's argmax is the log-odds weighted vote (the truth module as the oracle)."""
    rng = np.random.default_rng(7)
    classes = ["Positive", "Negative", "Neutral"]
    for trial in range(200):
        n = int(rng.integers(2, 7))
        labels = rng.choice(classes, size=n)
        accuracy = rng.uniform(0.4, 0.95, size=n)
        score = score_task([sub(a + 1, str(labels[a])) for a in range(n)], None, SENTIMENT, None,
                           {a + 1: float(accuracy[a]) for a in range(n)})
        table = pd.DataFrame({"task": 0, "worker": range(1, n + 1), "label": labels})
        weights = log_odds_weights(pd.Series(accuracy, index=range(1, n + 1)), len(classes))
        oracle = weighted_vote(table, weights)
        post = score.posterior
        top = max(post.values())
        tied = sorted(c for c, p in post.items() if math.isclose(p, top, rel_tol=1e-9))
        if len(tied) == 1:
            assert score.consensus == oracle.loc[0, "label"], trial


def test_one_coin_posterior_by_hand():
    # Three classes: an annotator of reliability r gives the true class with probability r, each other one (1-r)/2.
    score = score_task([sub(1, "Positive"), sub(2, "Negative")], None, SENTIMENT, None, {1: 0.8, 2: 0.6})
    joint = {"Positive": 0.8 * 0.2, "Negative": 0.1 * 0.6, "Neutral": 0.1 * 0.2}
    total = sum(joint.values())
    assert score.posterior == pytest.approx({c: p / total for c, p in joint.items()})
    assert score.consensus == "Positive" and score.confidence == pytest.approx(0.16 / total)
    # Each annotator is judged by the posterior of the others alone: 1 by 2's vote, 2 by 1's.
    assert score.contributions[1].peer == pytest.approx(0.2 / (0.2 + 0.6 + 0.2))
    assert score.contributions[2].peer == pytest.approx(0.1 / (0.8 + 0.1 + 0.1))


def test_non_categorical_configs_use_weighted_similarity_and_a_medoid():
    def span(start, end, label="PER"):
        return [{"from_name": "label", "to_name": "text", "type": "labels",
                 "value": {"start": start, "end": end, "labels": [label]}}]
    control = LabelConfig.parse(NER).controls[0].name
    results = [span(0, 5), span(0, 5), span(20, 30)]
    results = [[{**r[0], "from_name": control}] for r in results]
    score = score_task([sub(i + 1, result=r) for i, r in enumerate(results)], None, NER, None, {})
    assert score.contributions[1].peer == pytest.approx(0.5)
    assert score.contributions[3].peer == 0.0
    assert score.consensus == "u1-2026-01-01T00:00:00Z" and score.confidence == pytest.approx(0.5)
    assert score.consensus_share == pytest.approx(2 / 3) and score.consensus_reached


def test_label_of():
    assert label_of(sub(1, "Neutral").result, "sentiment") == "Neutral"
    assert label_of([], "sentiment") is None


@pytest.mark.parametrize("n", [2, 5])
def test_pair_count(n):
    score = score_task([sub(i, "Positive") for i in range(1, n + 1)], None, SENTIMENT, None, {})
    assert len(score.pairs) == len(list(itertools.combinations(range(n), 2)))


def test_split_task_has_no_consensus():
    score = score_task([sub(1, "Positive"), sub(2, "Negative")], None, SENTIMENT, None, {})
    assert score.consensus_share == 0.5 and not score.consensus_reached
    assert not score_task([sub(1, "Positive")], None, SENTIMENT, None, {}).consensus_reached


def test_single_choice_fast_path_equals_compare_results():
    """compare_results is the oracle for the label-equality shortcut on single-choice configs."""
    from qa_hooks.similarity import compare_results

    rng = np.random.default_rng(3)
    options = ["Positive", "Negative", "Neutral", None]
    for trial in range(100):
        picks = rng.choice(len(options), size=int(rng.integers(2, 7)))
        subs = [sub(a + 1, options[k]) for a, k in enumerate(picks)]
        score = score_task(subs, None, SENTIMENT, {"sentiment": {"overall": 1.0}}, {})
        for (ua, ub), value in score.pairs.items():
            a = next(s for s in subs if s.unique_id == ua)
            b = next(s for s in subs if s.unique_id == ub)
            assert value == compare_results(a.result, b.result, SENTIMENT, {"sentiment": {"overall": 1.0}}), trial
