"""The per-project Dawid–Skene refit (qa_hooks/refit.py): the fit, its guards, its storage, and the services that
read it, against real Redis and a real RQ worker."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from rq import Queue, SimpleWorker

from core.keys import Keys
from core.settings import current
from qa_hooks.events import Event, Submission
from qa_hooks.fit import (
    FitSettings,
    ProjectFit,
    SemiSupervisedDawidSkene,
    clear_fit_cache,
    load_fit,
    refit_due,
    stored_fit,
)
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger
from qa_hooks.refit import fit_labels, read_labels, refit_all, refit_project
from qa_hooks.truth import DawidSkene, label_posterior
from scripts.crowd_sets import load_gold, load_labels
from scripts.replay import label_config_for

PREFIX = "rf"
PROJECT = 1


def codes(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.Index, pd.Index, pd.Index]:
    t, tasks = pd.factorize(frame["task"], sort=True)
    w, workers = pd.factorize(frame["worker"], sort=True)
    y, classes = pd.factorize(frame["label"], sort=True)
    return t, w, y, pd.Index(tasks), pd.Index(workers), pd.Index(classes)


def simulate(seed: int = 0, n_tasks: int = 300, classes: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    """Eight good workers (0.85-0.95) and four spammers (0.5), five labels per task."""
    rng = np.random.default_rng(seed)
    accuracy = {f"good{i}": 0.85 + 0.1 * i / 7 for i in range(8)} | {f"spam{i}": 0.5 for i in range(4)}
    truth = rng.integers(classes, size=n_tasks)
    rows = []
    for task in range(n_tasks):
        for worker in rng.choice(list(accuracy), 5, replace=False):
            right = rng.random() < accuracy[worker]
            wrong = (truth[task] + 1 + rng.integers(classes - 1)) % classes
            rows.append((task, worker, int(truth[task] if right else wrong)))
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), truth


# -- the fit ------------------------------------------------------------------------------------------------------


def test_gold_enters_as_known_truth_and_teaches_the_confusions() -> None:
    # Two workers who always disagree: without gold nobody can tell who is right; with a few gold answers, EM
    # learns who is, and carries it to the tasks without gold.
    truth = np.arange(40) % 2
    t = np.repeat(np.arange(40), 2)
    w = np.tile([0, 1], 40)  # 0: honest, 1: liar
    y = np.stack([truth, 1 - truth], axis=1).ravel()
    blind = SemiSupervisedDawidSkene(2).fit(t, w, y, n_tasks=40, n_workers=2)
    assert abs(np.trace(np.exp(blind.log_conf_[0])) - np.trace(np.exp(blind.log_conf_[1]))) < 0.2
    gold = {i: int(truth[i]) for i in range(10)}
    taught = SemiSupervisedDawidSkene(2).fit(t, w, y, n_tasks=40, n_workers=2, gold=gold)
    assert np.all(taught.posteriors_[:10] == np.eye(2)[truth[:10]])  # clamped
    honest, liar = (np.trace(np.exp(taught.log_conf_[i])) / 2 for i in (0, 1))
    assert honest > 0.8 > 0.2 > liar
    assert np.all(taught.posteriors_[10:].argmax(axis=1) == truth[10:])


def test_as_accurate_as_batch_dawid_skene_on_real_crowds() -> None:
    for name in ("rte", "temp"):
        frame, gold = load_labels(name), load_gold(name)
        t, w, y, tasks, _, classes = codes(frame)
        model = SemiSupervisedDawidSkene(len(classes)).fit(t, w, y, n_tasks=len(tasks), n_workers=w.max() + 1)
        ours = np.mean(classes[model.posteriors_.argmax(axis=1)] == gold.reindex(tasks).to_numpy())
        batch = DawidSkene().fit(frame).labels_
        theirs = np.mean(batch.to_numpy() == gold.reindex(batch.index).to_numpy())
        assert ours >= theirs - 0.01, (name, ours, theirs)


def test_a_label_flipped_start_is_caught_and_restarted() -> None:
    frame, truth = simulate(seed=3)
    t, w, y, tasks, workers, _ = codes(frame)
    flipped = np.log(np.array([[0.2, 0.8], [0.8, 0.2]]))
    init = (np.broadcast_to(flipped, (len(workers), 2, 2)).copy(), flipped, np.log([0.5, 0.5]))
    model = SemiSupervisedDawidSkene(2).fit(t, w, y, n_tasks=len(tasks), n_workers=len(workers), init=init,
                                            max_iter=1)
    assert model.restarted_
    assert np.mean(model.posteriors_.argmax(axis=1) == truth) > 0.95
    assert not SemiSupervisedDawidSkene(2).fit(t, w, y, n_tasks=len(tasks), n_workers=len(workers)).restarted_


def test_gold_catches_a_flip_the_crowd_alone_cannot() -> None:
    # Most workers are adversarial (they give the wrong class): majority vote and unguided EM are both flipped.
    # Gold says so: the guard's gold check restarts, and the clamped gold then pulls EM the right way.
    rng = np.random.default_rng(5)
    truth = rng.integers(2, size=200)
    rows = [(i, f"w{j}", int(truth[i] if rng.random() < (0.9 if j < 2 else 0.2) else 1 - truth[i]))
            for i in range(200) for j in rng.choice(6, 4, replace=False)]
    t, w, y, tasks, workers, _ = codes(pd.DataFrame(rows, columns=["task", "worker", "label"]))
    gold = {i: int(truth[i]) for i in range(40)}
    model = SemiSupervisedDawidSkene(2).fit(t, w, y, n_tasks=len(tasks), n_workers=len(workers), gold=gold)
    assert np.mean(model.posteriors_[40:].argmax(axis=1) == truth[40:]) > 0.85


def test_warm_start_from_the_previous_fit_converges_in_fewer_rounds() -> None:
    frame, _ = simulate(seed=4, n_tasks=600)
    t, w, y, tasks, workers, _ = codes(frame)
    n = len(frame) * 9 // 10
    first = SemiSupervisedDawidSkene(2).fit(t[:n], w[:n], y[:n], n_tasks=len(tasks), n_workers=len(workers))
    cold = SemiSupervisedDawidSkene(2).fit(t, w, y, n_tasks=len(tasks), n_workers=len(workers))
    warm = SemiSupervisedDawidSkene(2).fit(t, w, y, n_tasks=len(tasks), n_workers=len(workers),
                                           init=(first.log_conf_, first.pooled_log_conf_, first.log_prior_))
    assert warm.n_iter_ < cold.n_iter_
    assert np.array_equal(warm.posteriors_.argmax(axis=1), cold.posteriors_.argmax(axis=1))


def test_25000_labels_refit_in_well_under_a_second() -> None:
    rng = np.random.default_rng(0)
    n_tasks, n_workers, k = 5000, 200, 3
    truth = rng.integers(k, size=n_tasks)
    t = np.repeat(np.arange(n_tasks), 5)
    w = rng.integers(n_workers, size=len(t))
    accuracy = rng.uniform(0.5, 0.95, size=n_workers)
    right = rng.random(len(t)) < accuracy[w]
    y = np.where(right, truth[t], (truth[t] + rng.integers(1, k, size=len(t))) % k)
    model = SemiSupervisedDawidSkene(k)
    started = time.perf_counter()
    model.fit(t, w, y, n_tasks=n_tasks, n_workers=n_workers)
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    SemiSupervisedDawidSkene(k).fit(t, w, y, n_tasks=n_tasks, n_workers=n_workers,
                                    init=(model.log_conf_, model.pooled_log_conf_, model.log_prior_))
    warm_s = time.perf_counter() - started
    print(f"25,000 labels: cold fit {cold_s:.3f} s ({model.n_iter_} rounds), warm refit {warm_s:.3f} s")
    assert len(t) == 25_000 and cold_s < 1.0 and warm_s < 0.5
    assert np.mean(model.posteriors_.argmax(axis=1) == truth) > 0.9


def test_refit_schedule_every_n_then_a_share() -> None:
    assert not refit_due(49, 0, 50, 0.05) and refit_due(50, 0, 50, 0.05)
    assert not refit_due(10_100, 10_000, 50, 0.05) and refit_due(10_500, 10_000, 50, 0.05)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        SemiSupervisedDawidSkene(1)
    with pytest.raises(ValueError, match="prior_accuracy"):
        SemiSupervisedDawidSkene(2, FitSettings(prior_accuracy=0.4))
    with pytest.raises(ValueError, match="model"):
        FitSettings(model="glad")
    with pytest.raises(ValueError, match="label codes"):
        SemiSupervisedDawidSkene(2).fit([0], [0], [2], n_tasks=1, n_workers=1)
    with pytest.raises(ValueError, match="one entry per label"):
        SemiSupervisedDawidSkene(2).fit([0, 1], [0], [1], n_tasks=2, n_workers=1)


def test_label_posterior_is_naive_bayes() -> None:
    columns = np.array([[0.9, 0.2], [0.6, 0.3]])  # P(label | class 0), P(label | class 1) for two labels
    expected = np.array([0.5 * 0.9 * 0.6, 0.5 * 0.2 * 0.3])
    assert label_posterior(columns, np.array([0.5, 0.5])) == pytest.approx(expected / expected.sum())
    assert label_posterior(np.zeros((0, 2)), np.array([3.0, 1.0])) == pytest.approx([0.75, 0.25])


# -- storage and the services, on real Redis -------------------------------------------------------------------


CLASSES = ["no", "yes"]
CONFIG = label_config_for(CLASSES)
INFO = {"title": "refit", "label_config": CONFIG, "control_weights": {"label": {"overall": 1.0, "type": "Choices"}}}


def submission(i: int, task: int, annotator: int, label: str, **kw) -> Submission:
    stamp = f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.{i // 3600:03d}Z"
    result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
    return Submission(project=PROJECT, task=task, annotation_id=i, unique_id=f"s{i}", annotator=annotator,
                      result=result, updated_at=stamp, created_at=stamp, **kw)


def send(connection, subs: list[Submission], gold: dict[int, str] | None = None) -> None:
    from qa_hooks.events import TaskInfo

    tasks = [TaskInfo(t, {"text": str(t)}, {"gold": g}) for t, g in (gold or {}).items()]
    event = Event("ANNOTATION_CREATED", PROJECT, INFO, submissions=subs, tasks=tasks)
    process_event(event.to_dict(), PREFIX, connection)


def crowd_stream(n_tasks: int = 60, seed: int = 0) -> tuple[list[Submission], dict[int, str]]:
    """Annotators 1-4 right 90% of the time, 5-6 always say "yes"; three labels per task."""
    rng = np.random.default_rng(seed)
    truth = {task: CLASSES[int(rng.integers(2))] for task in range(1, n_tasks + 1)}
    subs, i = [], 0
    for task, answer in truth.items():
        for annotator in rng.choice(6, 3, replace=False) + 1:
            i += 1
            right = answer if rng.random() < 0.9 else CLASSES[1 - CLASSES.index(answer)]
            label = "yes" if annotator >= 5 else right
            subs.append(submission(i, task, int(annotator), label))
    return subs, truth


def run_events_queue(connection) -> None:
    class Burst(SimpleWorker):
        def subscribe(self) -> None:  # no command channel: it takes a second to stop
            pass

        def unsubscribe(self) -> None:
            pass

    Burst([Queue(current().events_queue, connection=connection)], connection=connection).work(burst=True)


def test_refit_reads_every_live_label_and_gold_and_stores_the_fit(redis_conn) -> None:
    clear_fit_cache()
    subs, truth = crowd_stream()
    gold = {task: truth[task] for task in (1, 2, 3, 4, 5)}
    send(redis_conn, subs[:30], gold)
    send(redis_conn, subs[30:])
    # A later version replaces the earlier one; a skip and a ground-truth annotation are no labels.
    first = subs[0]
    changed = "yes" if first.result[0]["value"]["choices"][0] == "no" else "no"
    later = submission(first.annotation_id, first.task, first.annotator, changed)
    send(redis_conn, [Submission(**{**later.__dict__, "unique_id": first.unique_id,
                                    "updated_at": "2026-01-02T00:00:00.000Z"})])
    send(redis_conn, [Submission(**{**first.__dict__, "unique_id": "skip", "annotation_id": 900, "annotator": 7,
                                    "was_cancelled": True})])
    labels = read_labels(redis_conn, PREFIX, PROJECT)
    assert labels is not None and labels.classes == ("no", "yes")
    assert len(labels.label) == len(subs) and len(labels.gold) == 5
    assert "7" not in labels.workers
    t0, w0 = labels.tasks.index(first.task), labels.workers.index(str(first.annotator))
    mine = [labels.label[i] for i in range(len(labels.label)) if labels.task[i] == t0 and labels.worker[i] == w0]
    assert mine == [labels.classes.index(changed)]

    outcome = refit_project(PROJECT, PREFIX, redis_conn)
    assert outcome["refitted"] and outcome["labels"] == len(subs) and outcome["gold"] == 5
    fit = stored_fit(redis_conn, PREFIX, PROJECT)
    assert fit is not None and fit.version == 1 and fit.n_labels == len(subs)
    assert ProjectFit.from_json(fit.to_json(), 1).workers == fit.workers
    posteriors = redis_conn.hgetall(Keys(PREFIX).truth_posteriors(PROJECT))
    assert len(posteriors) == len(truth)
    assert [round(p, 5) for p in eval(posteriors[b"1"])] == [float(truth[1] == "no"), float(truth[1] == "yes")]
    # The always-"yes" annotators are the least accurate, and their confusion shows why.
    accuracy = {w: np.trace(fit.counts[i]) / fit.counts[i].sum() for i, w in enumerate(fit.workers)}
    assert max(accuracy["5"], accuracy["6"]) < min(accuracy[a] for a in "1234")
    assert fit.confusion_of("5")[0, 1] > 0.7  # says "yes" when the truth is "no"
    assert not redis_conn.exists(Keys(PREFIX).refit_queued(PROJECT))


def test_services_read_the_stored_fit(redis_conn) -> None:
    clear_fit_cache()
    subs, _ = crowd_stream(seed=1)
    send(redis_conn, subs)
    ledger = Ledger(redis_conn, PREFIX)
    before = ledger.reliabilities(PROJECT, [1, 5])
    refit_project(PROJECT, PREFIX, redis_conn)
    clear_fit_cache()
    fit = load_fit(redis_conn, PREFIX, PROJECT)
    after = ledger.reliabilities(PROJECT, [1, 5])
    alpha, beta = fit.accuracy(5, 3.5, 1.5)
    assert after[5].mean == pytest.approx(alpha / (alpha + beta))
    assert after[5].confusion == fit.confusion_counts(5) and after[5].confusion != before[5].confusion
    assert after[1].mean > after[5].mean
    assert after[5].evidence == before[5].evidence  # gold and peer counts stay the ledger's
    # Rescoring a task now takes its consensus from the fit: the posterior of its labels under the confusions.
    task = subs[0].task
    ledger.rescore(PROJECT, task)
    score = ledger.task_score(PROJECT, task)
    labels = [(str(s.annotator), s.result[0]["value"]["choices"][0]) for s in subs if s.task == task]
    assert score["posterior"] == pytest.approx(fit.posterior(labels))
    # The one_option signal judges "always yes" against the fit's class prior.
    assert set(fit.class_prior) == set(CLASSES)


def test_the_event_path_queues_one_refit_per_project_and_a_worker_runs_it(redis_conn) -> None:
    clear_fit_cache()
    every = current().refit_every
    subs, _ = crowd_stream(n_tasks=every)  # 3 labels per task: past the first refit's due point
    queue = Queue(current().events_queue, connection=redis_conn)
    for start in range(0, len(subs), 10):
        send(redis_conn, subs[start:start + 10])
    jobs = [job for job in queue.get_jobs() if job.func_name.endswith("refit_project")]
    assert len(jobs) == 1, "one refit queued however many events came after it was due"
    run_events_queue(redis_conn)
    fit = stored_fit(redis_conn, PREFIX, PROJECT)
    assert fit is not None and fit.n_labels >= every
    raw = redis_conn.hmget(Keys(PREFIX).truth_fit(PROJECT), "seq", "next_seq")
    assert int(raw[1]) == int(raw[0]) + max(every, int(np.ceil(current().refit_fraction * fit.n_labels)))
    # The next refit is due only after enough new labels.
    send(redis_conn, [submission(10_000, 1, 9, "yes")])
    assert not [job for job in queue.get_jobs() if job.func_name.endswith("refit_project")]


def test_the_cron_refits_projects_with_new_labels_only(redis_conn) -> None:
    clear_fit_cache()
    subs, _ = crowd_stream(n_tasks=10)
    send(redis_conn, subs)
    assert refit_all(PREFIX, redis_conn)[PROJECT]["refitted"]
    assert refit_all(PREFIX, redis_conn) == {}  # nothing new since
    send(redis_conn, [submission(5000, 1, 8, "no")])
    assert refit_all(PREFIX, redis_conn)[PROJECT]["labels"] == len(subs) + 1
    assert stored_fit(redis_conn, PREFIX, PROJECT).version == 2


def test_fit_labels_warm_starts_from_the_stored_fit(redis_conn) -> None:
    clear_fit_cache()
    subs, _ = crowd_stream(n_tasks=80, seed=2)
    send(redis_conn, subs)
    labels = read_labels(redis_conn, PREFIX, PROJECT)
    cold, _ = fit_labels(labels)
    warm, posteriors = fit_labels(labels, cold)
    assert warm.iterations < cold.iterations
    assert posteriors.shape == (80, 2)


def test_a_later_fit_is_never_overwritten_and_other_configs_are_not_refitted_on_every_event(redis_conn) -> None:
    clear_fit_cache()
    subs, _ = crowd_stream(n_tasks=20)
    send(redis_conn, subs)
    keys = Keys(PREFIX)
    redis_conn.hset(keys.truth_fit(PROJECT), "seq", 10**9)  # as if a refit of a later write had been stored
    outcome = refit_project(PROJECT, PREFIX, redis_conn)
    assert not outcome["refitted"] and stored_fit(redis_conn, PREFIX, PROJECT) is None
    # A project whose config is not one single-choice control has nothing to fit: the next try waits for as many
    # new writes as a refit does.
    redis_conn.delete(keys.truth_fit(PROJECT))
    redis_conn.hset(keys.project_info(2), "label_config", "<View><Text name='t' value='$t'/>"
                    "<TextArea name='a' toName='t'/></View>")
    redis_conn.set(keys.write_seq(2), 500)
    assert refit_project(2, PREFIX, redis_conn) == {"project": 2, "refitted": False,
                                                   "reason": "no categorical labels", "seq": 500}
    assert int(redis_conn.hget(keys.truth_fit(2), "next_seq")) == 500 + current().refit_every
    assert load_fit(redis_conn, PREFIX, 2, max_age_s=0) is None


def test_a_replay_runs_each_queued_refit_and_leaves_no_job_behind(redis_conn) -> None:
    from scripts.replay import replay

    clear_fit_cache()
    replay("temp", redis_conn, prefix=PREFIX, limit=600)
    fit = stored_fit(redis_conn, PREFIX, 1)
    assert fit is not None and fit.version >= 5  # every 50 labels at this size
    assert fit.n_labels > 600 - current().refit_every
    assert not Queue(current().events_queue, connection=redis_conn).get_jobs()
    clear_fit_cache()  # a process rereads a new fit within CACHE_S; here at once
    for annotator, record in Ledger(redis_conn, PREFIX).reliabilities(1, [1, 2, 3]).items():
        assert record.confusion == fit.confusion_counts(annotator)  # the ledger serves the fit's record


def test_the_one_option_signal_weighs_against_the_fits_class_prior(redis_conn) -> None:
    from qa_hooks.store import SubmissionStore

    clear_fit_cache()
    subs, _ = crowd_stream(n_tasks=80, seed=3)
    send(redis_conn, subs)
    refit_project(PROJECT, PREFIX, redis_conn)
    clear_fit_cache()
    fit = load_fit(redis_conn, PREFIX, PROJECT)
    flagged = Ledger(redis_conn, PREFIX).refresh_flags(PROJECT, SubmissionStore(redis_conn, PREFIX))
    one_option = {a: f for a, flags in flagged.items() for f in flags if f.name == "one_option"}
    assert set(one_option) == {5, 6}  # the always-"yes" annotators, nobody else
    assert one_option[5].evidence["prior"] == pytest.approx(fit.class_prior["yes"])


def test_labels_are_read_alike_from_trimmed_results(redis_conn) -> None:
    from qa_hooks.store import SubmissionStore

    subs, _ = crowd_stream(n_tasks=30, seed=4)
    send(redis_conn, subs)
    before = read_labels(redis_conn, PREFIX, PROJECT)
    trimmed = SubmissionStore(redis_conn, PREFIX).retain(PROJECT, before=time.time() + 10**9)
    assert trimmed["trimmed"] == len(subs)
    after = read_labels(redis_conn, PREFIX, PROJECT, chunk=7)  # several calls of the label script too
    assert after.workers == before.workers and len(after.label) == len(subs)
    assert sorted(zip(after.task, after.worker, after.label, strict=True)) == \
        sorted(zip(before.task, before.worker, before.label, strict=True))
