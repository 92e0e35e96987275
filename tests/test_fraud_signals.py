"""The fraud signals (qa_hooks/fraud), each alone on small made-up crowds, and the risk that combines them."""

from __future__ import annotations

import random

import pytest

from qa_hooks.fraud import (
    Answer,
    AnswerDistribution,
    Collusion,
    FraudRisk,
    GoldAccuracy,
    PeerAgreement,
    PrelabelAnchoring,
    Skips,
    TextCopying,
    TimeOnTask,
)
from qa_hooks.fraud.evidence import surprise
from routing.policy import DEFAULT_POLICY
from scripts.fraud_replay import baseline_flag_at

OPTIONS = ("a", "b", "c")


def honest_crowd(seed: int = 0, people: int = 12, tasks: int = 60, per_task: int = 5, accuracy: float = 0.85,
                 prior: tuple[float, ...] = (0.34, 0.33, 0.33), gold_every: int = 5) -> dict[str, list[Answer]]:
    """Honest annotators: right with ``accuracy``, lead times log-normal around 5 s + 0.05 s per character."""
    rng = random.Random(seed)
    truth = {t: rng.choices(OPTIONS, prior)[0] for t in range(tasks)}
    length = {t: rng.randint(50, 400) for t in range(tasks)}
    speed = {f"h{i}": rng.gauss(0, 0.3) for i in range(people)}
    crowd: dict[str, list[Answer]] = {p: [] for p in speed}
    clock = {p: rng.uniform(0, 1000) for p in speed}
    given: dict[int, dict[str, str]] = {}
    for t in range(tasks):
        for p in rng.sample(sorted(speed), per_task):
            option = truth[t] if rng.random() < accuracy else rng.choice([o for o in OPTIONS if o != truth[t]])
            given.setdefault(t, {})[p] = option
    for t, labels in given.items():
        for p, option in labels.items():
            seconds = (5 + 0.05 * length[t]) * pow(2.718, speed[p] + rng.gauss(0, 0.4))
            clock[p] += seconds + rng.uniform(1, 5)
            others = [o for q, o in labels.items() if q != p]
            consensus = max(set(others), key=others.count) if others else None
            crowd[p].append(Answer(task=t, at=clock[p], lead_time=seconds, option=option, length=length[t],
                                   gold=truth[t] if t % gold_every == 0 else None, consensus=consensus,
                                   text=f"{option} because word{rng.randint(0, 10**6)} and word{rng.randint(0, 10**6)}",
                                   prelabel=truth[t] if rng.random() < 0.7 else
                                   rng.choice([o for o in OPTIONS if o != truth[t]])))
    return crowd


def with_bot(crowd: dict[str, list[Answer]], make) -> dict[str, list[Answer]]:
    """``crowd`` plus ``bot``, who answers the tasks of ``h0`` through ``make(answer) -> answer`` (no free text
    unless ``make`` writes some: a copy of h0's would make them a copying pair)."""
    return {**crowd, "bot": [make(Answer(**{**a.__dict__, "text": None})) for a in crowd["h0"]]}


def fitted(signal, crowd):
    return signal.fit(crowd)


def test_too_fast_against_items_of_that_length_and_bursts() -> None:
    crowd = with_bot(honest_crowd(), lambda a: Answer(**{**a.__dict__, "lead_time": 0.8}))
    signal = fitted(TimeOnTask(), crowd)
    bot = signal.assess(crowd["bot"])
    assert bot is not None and bot.p_value < 1e-10 and "far faster" in bot.reason and bot.details["fast"] > 0
    assert all(signal.assess(crowd[p]).p_value > 1e-3 for p in crowd if p.startswith("h"))
    # a script posting every second with a made-up lead time is timed by its gaps
    burst = [Answer(**{**a.__dict__, "at": 1000.0 + i, "lead_time": 60.0}) for i, a in enumerate(crowd["h1"])]
    assert signal.assess(burst).p_value < 1e-10
    assert signal.assess(crowd["h1"][:3]) is None  # too few to judge


def test_one_option_is_judged_against_the_class_prior() -> None:
    crowd = with_bot(honest_crowd(), lambda a: Answer(**{**a.__dict__, "option": "a"}))
    signal = fitted(AnswerDistribution(OPTIONS), crowd)
    bot = signal.assess(crowd["bot"])
    assert bot.p_value < 1e-6 and "(the first option)" in bot.reason and "prior for it is" in bot.reason
    assert all(signal.assess(crowd[p]).p_value > 1e-3 for p in crowd if p.startswith("h"))
    # where 88 % of the truth is one label, giving it 90 % of the time is not evidence
    skewed = honest_crowd(prior=(0.88, 0.06, 0.06), accuracy=0.95)
    model = fitted(AnswerDistribution(OPTIONS), skewed)
    assert min(model.assess(a).p_value for a in skewed.values()) > 1e-3


def test_gold_accuracy_below_the_tier_is_a_test_and_streaks_count() -> None:
    crowd = honest_crowd()
    signal = fitted(GoldAccuracy(), crowd)
    assert signal.tier_accuracy_ > 0.7
    wrong = [Answer(task=i, option="b", gold="a") for i in range(10)]
    evidence = signal.assess(wrong)
    assert evidence.p_value < 1e-4 and "0 of 10 gold answers right" in evidence.reason and "last 10" in evidence.reason
    few = [Answer(task=i, option="b", gold="a") for i in range(3)]
    assert signal.assess(few) is None  # three gold answers prove nothing yet
    fine = [Answer(task=i, option="a" if i % 5 else "b", gold="a") for i in range(10)]
    assert signal.assess(fine).p_value > 0.05


def test_disagreeing_with_peers() -> None:
    rng = random.Random(3)
    crowd = with_bot(honest_crowd(tasks=120), lambda a: Answer(**{**a.__dict__, "option": rng.choice(OPTIONS)}))
    signal = fitted(PeerAgreement(), crowd)
    assert signal.assess(crowd["bot"]).p_value < 1e-3
    assert all(signal.assess(crowd[p]).p_value > 1e-3 for p in crowd if p.startswith("h"))


def test_accepting_wrong_prelabels() -> None:
    crowd = with_bot(honest_crowd(tasks=150), lambda a: Answer(**{**a.__dict__, "option": a.prelabel}))
    signal = fitted(PrelabelAnchoring(), crowd)
    bot = signal.assess(crowd["bot"])
    assert bot.p_value < 1e-3 and "pre-label" in bot.reason and bot.details["accepted_wrong"] == \
        bot.details["wrong_prelabels"]
    assert all(signal.assess(crowd[p]).p_value > 1e-3 for p in crowd if p.startswith("h"))


def test_skip_rate_and_skips_in_a_row() -> None:
    crowd = honest_crowd()
    skipper = [Answer(**{**a.__dict__, "skipped": i % 3 != 0 or i > 8, "option": None})
               for i, a in enumerate(crowd["h0"])]
    signal = fitted(Skips(), {**crowd, "skipper": skipper})
    evidence = signal.assess(skipper)
    assert evidence.p_value < 1e-6 and "in a row" in evidence.reason
    assert signal.assess(crowd["h1"]).p_value == 1.0


def test_near_identical_free_text_across_tasks_and_from_others() -> None:
    canned = ["I think this is right because it matches the text.",
              "I think this is right because it matches the text!"]
    crowd = with_bot(honest_crowd(), lambda a: Answer(**{**a.__dict__, "text": canned[a.task % 2]}))
    crowd["copier"] = [Answer(**{**a.__dict__, "text": a.text}) for a in crowd["h2"]]
    signal = fitted(TextCopying(), crowd)
    bot = signal.assess(crowd["bot"], annotator="bot")
    assert bot.p_value < 1e-6 and "their own answers on other tasks" in bot.reason
    copier = signal.assess(crowd["copier"], annotator="copier")
    assert copier.p_value < 1e-6 and copier.details["partner"] == "h2"
    assert all(signal.assess(crowd[p], annotator=p).p_value > 1e-3 for p in crowd if p.startswith("h") and p != "h2")


def test_collusion_is_agreement_beyond_what_accuracies_predict() -> None:
    crowd = honest_crowd(per_task=6)
    rng = random.Random(1)
    leader = [Answer(**{**a.__dict__, "option": rng.choice(OPTIONS)}) for a in crowd["h0"]]
    follower = [Answer(**{**a.__dict__}) for a in leader]
    crowd = {**crowd, "leader": leader, "follower": follower}
    signal = fitted(Collusion(), crowd)
    evidence = signal.assess(follower, annotator="follower")
    assert evidence.p_value < 1e-6 and evidence.details["partner"] == "leader" and "shared tasks" in evidence.reason
    assert all(signal.assess(crowd[p], annotator=p).p_value > 1e-3 for p in crowd if p.startswith("h"))


def test_the_risk_names_its_reasons_and_separates_bots_from_the_crowd() -> None:
    crowd = with_bot(honest_crowd(), lambda a: Answer(**{**a.__dict__, "option": "a", "lead_time": 0.7,
                                                        "at": None}))
    model = FraudRisk(options=OPTIONS).fit(crowd)
    risks = model.predict(crowd)
    bot = risks["bot"]
    assert bot.risk >= DEFAULT_POLICY.fraud.pause_at
    assert {e.signal for e in bot.reasons} >= {"too_fast", "one_option"}
    assert bot.reasons[0].p_value == min(e.p_value for e in bot.reasons) and "; " in bot.summary
    assert bot.to_dict()["reasons"][0]["surprise"] > 0
    assert max(r.risk for p, r in risks.items() if p != "bot") < DEFAULT_POLICY.fraud.review_at
    assert model.assess("nobody", []).risk == 0.0


def test_surprise() -> None:
    assert surprise(1e-3) == pytest.approx(3.0) and surprise(0.0) == pytest.approx(300.0)


def test_enterprise_plugin_baseline_rules() -> None:
    same_text = [Answer(task=i, text="same", option=OPTIONS[i % 3], at=i * 100.0) for i in range(5)]
    assert baseline_flag_at(same_text) == 3
    one_choice = [Answer(task=i, option="a", at=i * 100.0) for i in range(12)]
    assert baseline_flag_at(one_choice) == 10
    fast = [Answer(task=i, option=OPTIONS[i % 3], at=i * 20.0) for i in range(25)]
    assert baseline_flag_at(fast) == 20
    slow = [Answer(task=i, option=OPTIONS[i % 3], at=i * 40.0) for i in range(25)]
    assert baseline_flag_at(slow) is None


def test_hard_items_are_allowed_to_take_longer() -> None:
    rng = random.Random(5)
    crowd = {f"h{i}": [Answer(task=t, lead_time=(5 + 40 * d) * pow(2.718, rng.gauss(0, 0.3)), length=100,
                              difficulty=d, option="a")
                       for t, d in enumerate(rng.random() for _ in range(40))] for i in range(8)}
    signal = fitted(TimeOnTask(), crowd)
    assert signal.coef_[1] > 1.0  # log seconds rise with difficulty
    quick_on_easy = [Answer(task=t, lead_time=5.0, length=100, difficulty=0.0, option="a") for t in range(20)]
    assert signal.assess(quick_on_easy).p_value > 0.05  # 5 s is what easy items take here
    quick_on_hard = [Answer(task=t, lead_time=5.0, length=100, difficulty=1.0, option="a") for t in range(20)]
    assert signal.assess(quick_on_hard).p_value < 1e-6
