"""Training's write of the predicted difficulty (ml_backend/training.py) with a private Redis and the shared fake
Label Studio: it must not erase what routing wrote into a task's data after the export training started from."""

from __future__ import annotations

import json
from datetime import datetime

import redis

from core.task_lock import TaskDataLock
from ml_backend import artifacts
from ml_backend.labeling import choice_region
from ml_backend.training import DIFFICULTY_FIELD, train_project, write_difficulty
from scripts.seed import label_config
from tests.fake_labelstudio import URL, FakeLabelStudio

PREFIX = "tt"
PROJECT = 3


class LockCheckingLabelStudio(FakeLabelStudio):
    """Records, for every data write, whether the task's data lock was held at that moment."""

    def __init__(self, connection: redis.Redis) -> None:
        super().__init__()
        self.lock = TaskDataLock(connection, PREFIX)
        self.held: list[bool] = []

    def replace_task_data(self, task: int, data: dict) -> dict:
        self.held.append(bool(self.lock.connection.exists(self.lock.key(task))))
        return super().replace_task_data(task, data)


def test_difficulty_keeps_exam_offers_made_after_the_export(redis_conn) -> None:
    ls = LockCheckingLabelStudio(redis_conn)
    ls.add_project(PROJECT, "<View/>")
    offered = ls.add_task(PROJECT, {"text": "gold"}, {"gold": "Positive"})
    plain = ls.add_task(PROJECT, {"text": "plain"})
    export = ls.export(PROJECT)  # training starts from this
    # ... while it trains, routing offers the gold task to an annotator and assigns the other one
    ls.tasks[offered]["data"]["crowdgate_exam"] = "|ann@x.test|"
    ls.tasks[plain]["data"]["assigned_to"] = "bob@x.test"

    written = write_difficulty(ls, export, [0.25, 0.75], PROJECT, PREFIX, redis_conn)

    assert written == 2 and ls.held == [True, True]
    assert ls.tasks[offered]["data"] == {"text": "gold", "crowdgate_exam": "|ann@x.test|", DIFFICULTY_FIELD: 0.25}
    assert ls.tasks[plain]["data"] == {"text": "plain", "assigned_to": "bob@x.test", DIFFICULTY_FIELD: 0.75}
    stored = redis_conn.hgetall(f"{PREFIX}:p:{PROJECT}:difficulty")
    assert {int(k): json.loads(v) for k, v in stored.items()} == {offered: 0.25, plain: 0.75}


def test_unchanged_and_vanished_tasks_are_not_written(redis_conn) -> None:
    ls = LockCheckingLabelStudio(redis_conn)
    ls.add_project(PROJECT, "<View/>")
    same = ls.add_task(PROJECT, {"text": "a", DIFFICULTY_FIELD: 0.5})
    updated_meanwhile = ls.add_task(PROJECT, {"text": "b"})
    gone = ls.add_task(PROJECT, {"text": "c"})
    export = ls.export(PROJECT)
    ls.tasks[updated_meanwhile]["data"][DIFFICULTY_FIELD] = 0.1  # another training got there first
    del ls.tasks[gone]  # an admin deleted it

    assert write_difficulty(ls, export, [0.5, 0.1, 0.9], PROJECT, PREFIX, redis_conn) == 0
    assert not ls.written("patch_task")
    assert not redis_conn.exists(TaskDataLock(redis_conn, PREFIX).key(same))  # every lock released


def test_trained_models_belong_to_their_label_studio_project_and_config(redis_conn, tmp_path) -> None:
    ls = FakeLabelStudio()
    config = label_config("text_classification")
    ls.add_project(PROJECT, config, created_at="2026-11-22T04:17:12.218819Z")
    record = ls.project(PROJECT)
    good, bad = ["lovely", "superb", "brilliant", "wonderful"], ["awful", "tedious", "boring", "dreadful"]
    texts = [(f"a {w} film with {v} acting", label) for words, label in ((good, "Positive"), (bad, "Negative"))
             for w in words for v in words]
    for n, (text, label) in enumerate(texts):
        task = ls.add_task(PROJECT, {"text": text})
        wrong = "Negative" if label == "Positive" else "Positive"
        for user in (1, 2, 3):  # every third task splits 2 to 1: some disagreement for the difficulty model
            given = wrong if user == 3 and n % 3 == 0 else label
            ls.add_annotation(task, user, [choice_region(config, "sentiment", [given])])

    report = train_project(PROJECT, PREFIX, redis_conn, ls, model_root=tmp_path)

    assert report["classifier"] and report["difficulty"], report
    uid = artifacts.project_uid(record)
    assert uid == f"{PROJECT}.{int(datetime.fromisoformat(record['created_at']).timestamp())}"
    for kind in ("classifier", "difficulty"):
        model = artifacts.latest(PROJECT, kind, root=tmp_path)
        assert model.provenance == artifacts.Provenance.of(config, record, ls.url), kind
        assert (model.provenance.project_uid, model.provenance.label_studio_url) == (uid, URL)
        assert artifacts.mismatch(model, config, uid) is None
        # The same project id and config in another Label Studio (created at another time): not this model's.
        assert "trained for Label Studio project" in artifacts.mismatch(model, config, f"{PROJECT}.1")
