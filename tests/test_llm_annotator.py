"""The LLM as a calibrated member of the crowd: its pseudo-worker in the refit, never a human label, the stop setting,
its calibration on gold, and the stored answers through the real refit job on a real Redis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.keys import Keys
from qa_hooks.fit import clear_fit_cache, stored_fit
from qa_hooks.llm_annotator import (
    LLMAnswer,
    calibration,
    human_votes,
    is_llm_worker,
    llm_worker,
    read_llm_answers,
    record_llm_answer,
    stop_inputs,
    trusted_llms,
)
from qa_hooks.refit import ProjectLabels, fit_labels, refit_project, with_llm_answers
from routing.policy import PolicyError, parse_policy
from routing.stopping import WorkerModel, decide_stop_with_llm
from tests.test_refit import CLASSES, PREFIX, PROJECT, crowd_stream, send

STRONG, WEAK = llm_worker("big", "v2"), llm_worker("tiny", "v1")


def crowd_with_llms(seed: int = 0, n_tasks: int = 400) -> tuple[ProjectLabels, list[LLMAnswer], np.ndarray]:
    """Five humans of accuracy 0.75, three labels per task; a 0.95 LLM and a 0.52 LLM answer every task."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(2, size=n_tasks)
    task, worker, label = [], [], []
    for t in range(n_tasks):
        for w in rng.choice(5, 3, replace=False):
            task.append(t)
            worker.append(int(w))
            label.append(int(truth[t] if rng.random() < 0.75 else 1 - truth[t]))
    labels = ProjectLabels(("no", "yes"), list(range(100, 100 + n_tasks)), [str(w + 1) for w in range(5)],
                           np.array(task), np.array(worker), np.array(label), {t: int(truth[t]) for t in range(20)},
                           0)
    answers = []
    for name, accuracy in ((STRONG, 0.95), (WEAK, 0.52)):
        for t in range(n_tasks):
            right = rng.random() < accuracy
            answers.append(LLMAnswer(100 + t, name, ("no", "yes")[int(truth[t] if right else 1 - truth[t])], 0.9))
    return labels, answers, truth


def test_the_llm_pseudo_worker_enters_the_fit_and_a_weak_one_weighs_little() -> None:
    labels, answers, truth = crowd_with_llms()
    answers.append(LLMAnswer(100, STRONG, "maybe", 0.5))  # outside the classes: left out
    answers.append(LLMAnswer(9999, STRONG, "yes", 0.5))  # an unknown task: left out
    merged = with_llm_answers(labels, answers)
    assert merged.workers[-2:] == [STRONG, WEAK] and len(merged.label) == len(labels.label) + 2 * len(labels.tasks)
    fit, posteriors = fit_labels(merged)
    strong, weak = fit.confusion_of(STRONG), fit.confusion_of(WEAK)
    assert np.diag(strong).min() > 0.9
    assert np.diag(weak).max() < 0.65
    # Its weight in the posterior is the log-likelihood ratio of its answer: a weak model moves a task little.
    weight = {w: np.log(fit.confusion_of(w)[1, 1] / fit.confusion_of(w)[0, 1]) for w in (STRONG, WEAK)}
    assert weight[WEAK] < 0.25 * weight[STRONG]
    assert fit.posterior([(WEAK, "yes")])["yes"] < 0.6 < 0.85 < fit.posterior([(STRONG, "yes")])["yes"]
    # The strong model makes truth inference more accurate than the humans alone; the weak one does not hurt.
    alone = fit_labels(labels)[1].argmax(axis=1)
    with_weak = fit_labels(with_llm_answers(labels, [a for a in answers if a.worker == WEAK]))[1].argmax(axis=1)
    assert np.mean(posteriors.argmax(axis=1) == truth) > np.mean(alone == truth) + 0.03
    assert np.mean(with_weak == truth) >= np.mean(alone == truth) - 0.005


def test_the_llm_is_never_a_human_label() -> None:
    assert is_llm_worker(STRONG) and STRONG == "llm:big:v2" and not is_llm_worker("17")
    with pytest.raises(ValueError):
        llm_worker(" ", "v1")
    labels = [("3", "yes"), (STRONG, "yes"), ("4", "no"), (WEAK, "no")]
    assert human_votes(labels) == {"yes": 1, "no": 1}
    assert stop_inputs(labels, False) == ([("3", "yes"), ("4", "no")], {"yes": 1, "no": 1})
    assert stop_inputs(labels, True, trusted={STRONG})[1] == {"yes": 2, "no": 1}
    assert trusted_llms({STRONG: 0.93, WEAK: 0.55, "3": 0.99}, 0.8) == {STRONG}
    # overlap.max counts humans: two humans and an LLM are not three labels.
    models = {"3": WorkerModel.one_coin(0.7, 2), "4": WorkerModel.one_coin(0.7, 2),
              STRONG: WorkerModel.one_coin(0.9, 2)}
    decision = decide_stop_with_llm(labels[:3], models, CLASSES, threshold=0.99, counts_toward_stop=True,
                                    llm_threshold=0.99, max_labels=3)
    assert not decision.stop
    assert decide_stop_with_llm(labels[:3], models, CLASSES, threshold=0.99, counts_toward_stop=True,
                                llm_threshold=0.99, max_labels=2).stop


def test_counts_toward_stop_decides_whether_one_human_and_the_llm_may_stop_a_task() -> None:
    models = {"3": WorkerModel.one_coin(0.85, 2), STRONG: WorkerModel.one_coin(0.95, 2)}
    labels = [("3", "yes"), (STRONG, "yes")]  # posterior of "yes": 0.85 * 0.95 / (0.85 * 0.95 + 0.15 * 0.05)

    def decide(**kw):
        return decide_stop_with_llm(labels, models, CLASSES, threshold=0.9, min_labels=2, min_agreeing=2, **kw)

    off = decide(counts_toward_stop=False, llm_threshold=0.95)
    assert not off.stop and off.confidence == pytest.approx(0.85)  # the stop's posterior leaves the LLM out
    on = decide(counts_toward_stop=True, llm_threshold=0.95)
    assert on.stop and on.label == "yes" and on.confidence == pytest.approx(0.8075 / 0.815)
    assert not decide(counts_toward_stop=True, llm_threshold=0.995).stop  # "above p": p not reached
    assert not decide(counts_toward_stop=True, llm_threshold=0.95, trusted=set()).stop  # not calibrated enough
    # Two humans agreeing need no LLM and no llm_threshold.
    two = [("3", "yes"), ("5", "yes"), (STRONG, "no")]
    assert decide_stop_with_llm(two, models | {"5": WorkerModel.one_coin(0.85, 2)}, CLASSES, threshold=0.9,
                                counts_toward_stop=False, llm_threshold=0.999).stop


def test_the_policy_llm_section() -> None:
    policy = parse_policy(None)
    assert not policy.llm.counts_toward_stop and policy.llm.min_accuracy == 0.8 and policy.llm.stop_threshold == 0.95
    on = parse_policy({"llm": {"counts_toward_stop": True, "stop_threshold": 0.97}})
    assert on.llm.counts_toward_stop and on.llm.stop_threshold == 0.97
    with pytest.raises(PolicyError) as err:
        parse_policy({"llm": {"counts_toward_stop": "yes please", "min_accuracy": 2, "p": 1}})
    message = str(err.value)
    assert "llm.counts_toward_stop" in message and "llm.min_accuracy" in message and "llm.p: unknown key" in message


def test_expected_calibration_error_and_reliability_bins() -> None:
    # Two bins: confidence 0.9 right 9 of 10 (calibrated), confidence 0.6 right 3 of 10 (0.3 over-confident).
    conf = [0.9] * 10 + [0.6] * 10
    right = [True] * 9 + [False] + [True] * 3 + [False] * 7
    cal = calibration("llm:x:1", conf, right, n_bins=10)
    assert cal.n == 20 and cal.accuracy == 0.6 and cal.ece == pytest.approx(0.15)
    assert [(b[2], b[3], b[4]) for b in cal.bins] == [(10, 0.6, 0.3), (10, 0.9, 0.9)]
    rng = np.random.default_rng(0)
    c = rng.uniform(0.5, 1.0, 20_000)
    assert calibration("llm:x:1", c, rng.random(20_000) < c).ece < 0.02  # a calibrated oracle
    assert calibration("llm:x:1", [], []).n == 0
    with pytest.raises(ValueError):
        calibration("llm:x:1", [0.5], [True, False])


def test_stored_answers_enter_the_refit_job_and_calibration_is_stored(redis_conn) -> None:
    clear_fit_cache()
    subs, truth = crowd_stream()
    gold = {task: truth[task] for task in range(1, 11)}
    send(redis_conn, subs, gold)
    rng = np.random.default_rng(1)
    for task, answer in truth.items():
        wrong = CLASSES[1 - CLASSES.index(answer)]
        record_llm_answer(redis_conn, PREFIX, PROJECT, LLMAnswer(task, STRONG, answer if task % 10 else wrong, 0.9))
        record_llm_answer(redis_conn, PREFIX, PROJECT,
                          LLMAnswer(task, WEAK, answer if rng.random() < 0.5 else wrong, 0.8))
    redis_conn.hset(Keys(PREFIX).llm_labels(PROJECT), "garbage", "{not json")  # skipped, never blocks a refit
    assert len(read_llm_answers(redis_conn, PREFIX, PROJECT)) == 2 * len(truth)
    with pytest.raises(ValueError):
        record_llm_answer(redis_conn, PREFIX, PROJECT, LLMAnswer(1, STRONG, "yes", 1.5))

    outcome = refit_project(PROJECT, PREFIX, redis_conn)
    assert outcome["refitted"] and outcome["labels"] == len(subs) + 2 * len(truth)
    fit = stored_fit(redis_conn, PREFIX, PROJECT)
    assert fit is not None and {STRONG, WEAK} <= set(fit.workers)
    assert np.trace(fit.confusion_of(STRONG)) > np.trace(fit.confusion_of(WEAK)) + 0.3
    stored = json.loads(redis_conn.hget(Keys(PREFIX).truth_fit(PROJECT), "llm_calibration"))
    assert set(stored) == {STRONG, WEAK}
    assert stored[STRONG]["n"] == 10 and stored[STRONG]["accuracy"] == 0.9  # task 10 is gold and answered wrong
    assert stored[STRONG]["ece"] == pytest.approx(0.0) and stored[STRONG]["bins"][0][2] == 10


class _LLMStandIn:
    """A model chain that answers like ml_backend.llm (model_version ``llm:<model>:p<prompt>``): the unit under
    test is /predict storing the answers, not the LLM."""

    model_version = "llm:stand-in:p3"

    def predict(self, tasks, label_config, project=None, project_uid=None):
        region = {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["yes"]}}
        return [{"result": [region], "score": 0.8, "model_version": self.model_version} for _ in tasks]


def test_predict_stores_the_llm_answers_for_the_refit(redis_service, redis_conn) -> None:
    from ml_backend.app import create_app
    from tests.state_isolation import isolated_settings
    from tests.test_refit import CONFIG

    app = create_app(isolated_settings(redis_url=redis_service.url, key_prefix=PREFIX), model=_LLMStandIn())
    reply = app.test_client().post("/predict", json={
        "tasks": [{"id": 7, "data": {"text": "a"}}, {"id": 8, "data": {"text": "b"}}, {"data": {"text": "no id"}}],
        "project": f"{PROJECT}.1700000000", "label_config": CONFIG})
    assert reply.status_code == 200 and len(reply.json["results"]) == 3
    stored = sorted(read_llm_answers(redis_conn, PREFIX, PROJECT), key=lambda a: a.task)
    assert stored == [LLMAnswer(7, "llm:stand-in:p3", "yes", 0.8), LLMAnswer(8, "llm:stand-in:p3", "yes", 0.8)]
    # Redis gone: the predictions still come back.
    down = create_app(isolated_settings(redis_url="redis://127.0.0.1:1/0", key_prefix=PREFIX), model=_LLMStandIn())
    assert down.test_client().post("/predict", json={"tasks": [{"id": 9, "data": {"text": "c"}}],
                                                     "project": PROJECT, "label_config": CONFIG}).status_code == 200


def test_the_routing_stop_lets_one_human_and_a_trusted_llm_stop_a_task_only_when_the_policy_says_so(
        redis_conn) -> None:
    from types import SimpleNamespace

    from qa_hooks.fit import ProjectFit, one_coin_confusion
    from routing.decisions import TaskAction, TaskLabel, TaskState, decide_task
    from routing.router import llm_stop_labels

    off = parse_policy({"overlap": {"stop": {"match_overlap": None}}})
    on = parse_policy({"overlap": {"stop": {"match_overlap": None}}, "llm": {"counts_toward_stop": True}})
    human = (TaskLabel("3", "yes", "tier1"),)
    # One human at 0.85 and the LLM at 0.95 agreeing: posterior 0.991, above the policy's 0.9 and llm 0.95.
    state = TaskState("1", human, posterior={"yes": 0.991, "no": 0.009}, llm_labels=((STRONG, "yes"),))
    assert decide_task(state, on).action == TaskAction.FINAL
    assert decide_task(TaskState("1", human, posterior={"yes": 0.85, "no": 0.15}), off).action \
        == TaskAction.NEED_MORE
    strict = parse_policy({"overlap": {"stop": {"match_overlap": None}},
                           "llm": {"counts_toward_stop": True, "stop_threshold": 0.995}})
    decision = decide_task(state, strict)
    assert decision.action == TaskAction.NEED_MORE and "needed with the LLM's voice" in decision.reason
    # The router reads the stored answers of the fit's trusted LLMs only, and none when the policy is off.
    fit = ProjectFit(("no", "yes"), ("3", STRONG, WEAK),
                     np.stack([one_coin_confusion(2, a) for a in (0.85, 0.95, 0.55)]),
                     np.full((3, 2, 2), 10.0), one_coin_confusion(2, 0.8), np.array([0.5, 0.5]))
    for worker in (STRONG, WEAK):
        record_llm_answer(redis_conn, PREFIX, PROJECT, LLMAnswer(1, worker, "yes", 0.9))
    ctx = SimpleNamespace(store=SimpleNamespace(redis=redis_conn), prefix=PREFIX)
    labels, models = llm_stop_labels(ctx, on, PROJECT, 1, fit)
    assert labels == ((STRONG, "yes"),) and set(models) == {STRONG}
    assert models[STRONG].accuracy == pytest.approx(0.95)
    assert llm_stop_labels(ctx, on, PROJECT, 2, fit) == ((), {})  # no answer stored for task 2
