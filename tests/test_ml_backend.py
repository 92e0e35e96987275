import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from label_studio_sdk.label_interface import LabelInterface

from ml_backend.app import create_app
from ml_backend.zero_shot import MODEL_VERSION
from tests.conftest import fixture_json
from tests.state_isolation import isolated_settings, use_settings

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = fixture_json("ml_backend_requests.json")["requests"]
CONFIG = next(r["json_body"]["schema"] for r in REQUESTS if r["path"] == "/setup")


def captured(path):
    return [r for r in REQUESTS if r["path"] == path]


@pytest.fixture(scope="module")
def client():
    return create_app(isolated_settings(redis_url="")).test_client()


def test_health_and_versions(client):
    assert client.get("/health").json["status"] == "UP"
    assert client.get("/versions").json == {"versions": [MODEL_VERSION]}


def test_setup_answers_the_model_version_without_loading_models():
    # /setup must stay fast: a fresh process answers every captured /setup without importing the embedding model
    # (in this process another test may have loaded it already).
    code = (
        "import json, sys\n"
        "from ml_backend.app import create_app\n"
        "from tests.state_isolation import isolated_settings\n"
        "client = create_app(isolated_settings(redis_url='')).test_client()\n"
        "replies = [client.post('/setup', json=body) for body in json.load(sys.stdin)]\n"
        "print(json.dumps({'replies': [[r.status_code, r.json] for r in replies],\n"
        "                  'loaded': sorted(m for m in ('sentence_transformers', 'torch') if m in sys.modules)}))\n"
    )
    bodies = [request["json_body"] for request in captured("/setup")]
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(bodies), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert bodies and answer["replies"] == [[200, {"model_version": MODEL_VERSION}]] * len(bodies)
    assert answer["loaded"] == []


def test_captured_predict_requests_get_one_valid_result_per_task_in_order(client):
    interface = LabelInterface(CONFIG)
    for request in captured("/predict"):
        body = request["json_body"]
        reply = client.post("/predict", json=body)
        assert reply.status_code == 200, reply.json
        results = reply.json["results"]
        assert len(results) == len(body["tasks"])
        for item in results:
            assert set(item) >= {"result", "score", "model_version"}
            assert 0.0 <= item["score"] <= 1.0 and item["model_version"] == MODEL_VERSION
            assert item["result"], "a Choices config over text gets a region"
            assert interface.validate_prediction({"result": item["result"]}) is True


def test_zero_shot_picks_the_nearest_option(client):
    config = ('<View><Text name="t" value="$text"/><Choices name="topic" toName="t">'
              '<Choice value="sports"/><Choice value="cooking"/><Choice value="astronomy"/></Choices></View>')
    tasks = [{"id": 1, "data": {"text": "The striker scored twice in the football final."}},
             {"id": 2, "data": {"text": "Simmer the onions in butter, then add garlic and stir."}},
             {"id": 3, "data": {"text": "The telescope observed a distant galaxy and its stars."}}]
    reply = client.post("/predict", json={"tasks": tasks, "label_config": config})
    chosen = [r["result"][0]["value"]["choices"][0] for r in reply.json["results"]]
    assert chosen == ["sports", "cooking", "astronomy"]


def test_predict_without_setup_uses_the_config_it_was_given(client):
    body = {"tasks": [{"id": 9, "data": {"text": "fine"}}], "label_config": CONFIG, "project": "77.123"}
    assert len(client.post("/predict", json=body).json["results"]) == 1


def test_predict_after_setup_may_omit_the_config():
    fresh = create_app(isolated_settings(redis_url="")).test_client()
    fresh.post("/setup", json={"project": "5.1", "schema": CONFIG})
    reply = fresh.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "great"}}], "project": "5.1"})
    assert reply.status_code == 200 and len(reply.json["results"]) == 1


def test_tasks_without_text_get_an_empty_prediction_in_place(client):
    tasks = [{"id": 1, "data": {"text": "good"}}, {"id": 2, "data": {}}, {"id": 3, "data": {"text": "bad"}}]
    results = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG}).json["results"]
    assert [bool(r["result"]) for r in results] == [True, False, True]
    assert results[1]["score"] == 0.0


@pytest.mark.parametrize(
    "body",
    [None, [], {"tasks": "x", "label_config": CONFIG}, {"tasks": [1], "label_config": CONFIG}, {"tasks": []}],
)
def test_bad_predict_bodies_are_400(client, body):
    reply = client.post("/predict", json=body) if body is not None else \
        client.post("/predict", data="nope", content_type="application/json")
    assert reply.status_code == 400 and reply.json["error"]


def test_a_body_that_is_not_json_is_415(client):
    reply = client.post("/predict", data="nope")
    assert reply.status_code == 415 and "application/json" in reply.json["error"]


def test_webhook_events_are_answered(client):
    for request in captured("/webhook"):
        reply = client.post("/webhook", json=request["json_body"])
        assert reply.status_code in (200, 201, 503), reply.json
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED"}).status_code == 200
    assert client.post("/webhook", data="x", content_type="application/json").status_code == 400
    assert client.post("/webhook", data="x").status_code == 415
    assert client.post("/webhook", json={"no": "action"}).status_code == 400
    # without Redis nothing can be queued: said, not swallowed
    reply = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 2}})
    assert reply.status_code == 503 and "Redis" in reply.json["error"]


def test_training_is_queued_on_start_training_and_after_enough_annotations(redis_service, redis_conn):
    from rq import Queue

    settings = isolated_settings(redis_url=redis_service.url, key_prefix="t", retrain_every=3, ml_queue="t-ml")
    app = create_app(settings).test_client()
    queue = Queue(settings.ml_queue, connection=redis_conn)
    assert app.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 2}}).status_code == 201
    assert queue.count == 1 and queue.jobs[0].args == (2, "t")
    created = next(r["json_body"] for r in captured("/webhook") if r["json_body"]["action"] == "ANNOTATION_CREATED")
    replies = [app.post("/webhook", json=created).json for _ in range(3)]
    assert [r["retraining"] is not None for r in replies] == [False, False, True]
    assert queue.count == 2
    assert app.post("/webhook", json={"action": "START_TRAINING"}).status_code == 400


def test_the_trainer_queues_on_the_settings_ml_queue_unless_told_another(redis_conn, monkeypatch):
    from rq import Queue

    from ml_backend.protocol import Trainer

    use_settings(monkeypatch, ml_queue="t-configured-ml")
    Trainer(redis_conn, "t", every=3).start(9)
    Trainer(redis_conn, "t", every=3, queue="t-other-ml").start(10)
    assert [job.args for job in Queue("t-configured-ml", connection=redis_conn).jobs] == [(9, "t")]
    assert [job.args for job in Queue("t-other-ml", connection=redis_conn).jobs] == [(10, "t")]


def test_basic_auth():
    settings = isolated_settings(redis_url="", ml_basic_auth_user="ls", ml_basic_auth_password="pw")
    app = create_app(settings).test_client()
    assert app.get("/health").status_code == 401
    bad = base64.b64encode(b"ls:wrong").decode()
    assert app.get("/health", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    good = base64.b64encode(b"ls:pw").decode()
    assert app.get("/health", headers={"Authorization": f"Basic {good}"}).status_code == 200
    assert app.post("/setup", json={"project": "1.1", "schema": CONFIG},
                    headers={"Authorization": f"Basic {good}"}).status_code == 200


RTE_CONFIG = (Path(__file__).parents[1] / "label_configs" / "rte" / "config.xml").read_text()


def trained_classifier(provenance=None):
    from ml_backend.classifier import EmbeddingClassifier

    words = {"Positive": ["great", "lovely", "wonderful", "superb"], "Negative": ["awful", "dreadful", "poor", "bad"]}
    tasks, labels = [], []
    for label, vocabulary in words.items():
        for i in range(12):
            tasks.append({"data": {"text": f"a {vocabulary[i % 4]} film, {vocabulary[(i + 1) % 4]} acting"}})
            labels.append(label)
    classifier = EmbeddingClassifier(CONFIG, min_examples=10, provenance=provenance)
    assert classifier.fit(tasks, labels)
    return classifier


def test_a_trained_classifier_replaces_zero_shot(tmp_path):
    from ml_backend import artifacts
    from ml_backend.prelabeler import Prelabeler

    classifier = trained_classifier()
    artifacts.save(7, "classifier", classifier, version=classifier.model_version, root=tmp_path)
    model = Prelabeler(model_root=tmp_path)
    assert model.version_for(7) == classifier.model_version and model.version_for(8) == MODEL_VERSION
    fresh = create_app(isolated_settings(redis_url=""), model=model).test_client()
    body = {"tasks": [{"id": 1, "data": {"text": "a wonderful, lovely story", "crowdgate_difficulty": 0.3}}],
            "label_config": CONFIG, "project": "7.99"}
    [result] = fresh.post("/predict", json=body).json["results"]
    assert result["model_version"] == classifier.model_version
    assert result["result"][0]["value"]["choices"] == ["Positive"]
    assert fresh.post("/setup", json={"project": "7.1", "schema": CONFIG}).json["model_version"] == \
        classifier.model_version


def test_a_classifier_trained_for_another_label_config_is_ignored(tmp_path, caplog):
    # The demo trained an RTE classifier for its project 1; a fresh Label Studio's project 1 has a sentiment
    # config: the backend loaded the RTE model for it and answered 500 ("Name entailment is not found").
    from ml_backend import artifacts
    from ml_backend.classifier import EmbeddingClassifier
    from ml_backend.prelabeler import Prelabeler

    pairs = [({"data": {"text": f"a cat sat {i}", "hypothesis": f"a cat {i}"}}, "1") for i in range(12)]
    pairs += [({"data": {"text": f"rain fell {i}", "hypothesis": f"the sun shone {i}"}}, "0")
              for i in range(12)]
    rte = EmbeddingClassifier(RTE_CONFIG, min_examples=10)
    assert rte.fit([t for t, _ in pairs], [label for _, label in pairs])
    artifacts.save(1, "classifier", rte, root=tmp_path)
    app = create_app(isolated_settings(redis_url=""), model=Prelabeler(model_root=tmp_path)).test_client()
    body = {"tasks": [{"id": 1, "data": {"text": "great"}}], "label_config": CONFIG, "project": "1.1795321032"}
    with caplog.at_level("WARNING"):
        reply = app.post("/predict", json=body)
    assert reply.status_code == 200
    [result] = reply.json["results"]
    assert result["model_version"] == MODEL_VERSION and result["result"]
    assert "another label config" in caplog.text
    assert app.post("/setup", json={"project": "1.1795321032", "schema": CONFIG}).json["model_version"] == \
        MODEL_VERSION
    rte_task = {"id": 2, "data": {"text": "a cat sat 3", "hypothesis": "a cat 3"}}
    [own] = app.post("/predict", json={"tasks": [rte_task], "label_config": RTE_CONFIG, "project": "1.5"}).json[
        "results"]
    assert own["model_version"] == rte.model_version  # legacy artifacts are judged by the config they carry


def test_a_classifier_of_another_label_studio_project_is_ignored(tmp_path):
    from ml_backend import artifacts
    from ml_backend.prelabeler import Prelabeler

    # Label Studio names a project "<id>.<created_at epoch>" to the backend, as in the captured requests.
    project = fixture_json("webhook_annotation_created.json")["project"]
    uid = artifacts.project_uid(project)
    assert uid == next(r["json_body"]["project"] for r in REQUESTS if r["path"] == "/predict")
    classifier = trained_classifier(artifacts.Provenance.of(CONFIG, project, "http://localhost:18080"))
    artifacts.save(2, "classifier", classifier, root=tmp_path)
    app = create_app(isolated_settings(redis_url=""), model=Prelabeler(model_root=tmp_path)).test_client()
    tasks = [{"id": 1, "data": {"text": "a wonderful, lovely story"}}]
    same = app.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": uid}).json["results"]
    other = app.post("/predict", json={"tasks": tasks, "label_config": CONFIG, "project": "2.1"}).json["results"]
    assert same[0]["model_version"] == classifier.model_version
    assert other[0]["model_version"] == MODEL_VERSION


class Broken:
    model_version = "broken-1"

    def predict(self, *args, **kwargs):
        raise RuntimeError("model exploded")


def test_a_failing_model_falls_back_down_the_chain_and_predict_never_answers_500(tmp_path, monkeypatch):
    from ml_backend import artifacts
    from ml_backend.classifier import EmbeddingClassifier
    from ml_backend.prelabeler import Prelabeler

    classifier = trained_classifier()
    artifacts.save(3, "classifier", classifier, root=tmp_path)
    tasks = [{"id": 1, "data": {"text": "a wonderful, lovely story"}}, {"id": 2, "data": {"text": "awful"}}]
    body = {"tasks": tasks, "label_config": CONFIG, "project": "3.1"}

    model = Prelabeler(llm=Broken(), model_root=tmp_path)  # the LLM raises: the classifier answers
    app = create_app(isolated_settings(redis_url=""), model=model).test_client()
    assert [r["model_version"] for r in app.post("/predict", json=body).json["results"]] == \
        [classifier.model_version] * 2

    monkeypatch.setattr(EmbeddingClassifier, "predict", Broken.predict)  # the classifier raises: zero-shot
    assert [r["model_version"] for r in app.post("/predict", json=body).json["results"]] == [MODEL_VERSION] * 2

    model.zero_shot = Broken()  # zero-shot raises too: an empty prediction per task, still 200
    reply = app.post("/predict", json=body)
    assert reply.status_code == 200
    assert [(r["result"], r["score"]) for r in reply.json["results"]] == [([], 0.0), ([], 0.0)]

    reply = create_app(isolated_settings(redis_url=""), model=Broken()).test_client().post("/predict", json=body)
    assert reply.status_code == 200 and len(reply.json["results"]) == 2


def test_llm_answers_and_falls_back_per_task_when_it_has_none():
    import uuid

    from ml_backend.cache import MemoryCache
    from ml_backend.llm import LLMPredictor, LLMSettings
    from ml_backend.prelabeler import Prelabeler
    from tests.openai_stub import OpenAIStub, last_user_text

    def answer(body):
        text = last_user_text(body)
        return {"sentiment": "Positive"} if "good" in text else {"sentiment": "Not an option"}

    with OpenAIStub(answer) as stub:
        settings = LLMSettings(base_url=stub.base_url, model=f"stub-{uuid.uuid4().hex[:8]}", samples=1,
                               deadline_s=20, backoff_base_s=0.01)
        model = Prelabeler(llm=LLMPredictor(settings, cache=MemoryCache()))
        app = create_app(isolated_settings(redis_url=""), model=model).test_client()
        tasks = [{"id": 1, "data": {"text": "good"}}, {"id": 2, "data": {"text": "meh"}}]
        results = app.post("/predict", json={"tasks": tasks, "label_config": CONFIG}).json["results"]
    assert results[0]["model_version"].startswith("llm:")
    assert results[0]["result"][0]["value"]["choices"] == ["Positive"]
    assert results[1]["model_version"] == MODEL_VERSION  # the invalid answer was dropped; zero-shot stepped in
    assert stub.calls >= 2


def test_llm_prompt_carries_the_projects_guideline_and_gold_examples(redis_conn):
    import json
    import uuid

    from ml_backend.cache import MemoryCache
    from ml_backend.llm import LLMPredictor, LLMSettings
    from ml_backend.prelabeler import Prelabeler, ProjectKnowledge
    from qa_hooks.events import Event, TaskInfo
    from qa_hooks.jobs import process_event
    from tests.openai_stub import OpenAIStub

    guideline = "Sarcasm counts as Negative."
    info = {"label_config": CONFIG, "expert_instruction": guideline}
    tasks = [TaskInfo(1, {"text": "what a treat, another delay"}, {"gold": "Negative"}),
             TaskInfo(2, {"text": "ordinary day"}, {})]
    process_event(Event("TASKS_CREATED", 5, info, tasks=tasks).to_dict(), "t", redis_conn)

    with OpenAIStub(lambda body: {"sentiment": "Neutral"}) as stub:
        settings = LLMSettings(base_url=stub.base_url, model=f"stub-{uuid.uuid4().hex[:8]}", samples=1,
                               deadline_s=20, backoff_base_s=0.01)
        model = Prelabeler(llm=LLMPredictor(settings, cache=MemoryCache()),
                           knowledge=ProjectKnowledge(redis_conn, "t", examples=2))
        [result] = model.predict([{"id": 2, "data": {"text": "ordinary day"}}], CONFIG, project=5)
        sent = json.dumps(stub.requests[-1])
    assert result["result"][0]["value"]["choices"] == ["Neutral"]
    assert guideline in sent
    assert "what a treat, another delay" in sent  # the gold item, shown as a worked example


class _VersionOnly:
    """A model that only answers /setup: what is measured here is the protocol's own memory."""

    model_version = "fake-1"

    def version_for(self, project, label_config=None, project_uid=None):
        return self.model_version


def test_setup_keeps_project_configs_within_bounds():
    """Projects set up with large distinct configs (the probe of issue #14 grew the web process by 185 MiB with 40
    of 4 MiB) are held within the store's bound of total config size, the most recent ones kept for /predict."""
    from ml_backend.project_configs import ProjectConfigs

    app = create_app(isolated_settings(redis_url=""), model=_VersionOnly())
    store = app.extensions["crowdgate.ml"]["projects"]
    assert isinstance(store, ProjectConfigs)
    assert store.max_bytes <= 64 * 1024 * 1024 and store.max_projects <= 1024
    store.max_bytes = 8 * 1024 * 1024  # the same bound, smaller, so the test stays fast
    client = app.test_client()
    options = "".join(f'<Choice value="option {j}"/>' for j in range(1024 * 1024 // 26))
    for project in range(1, 41):
        config = f'<View><Text name="t" value="$text"/><Choices name="p{project}" toName="t">{options}</Choices></View>'
        assert client.post("/setup", json={"project": f"{project}.1", "schema": config}).status_code == 200
        assert store.size <= store.max_bytes
    assert 0 < len(store) < 10 and store.get(40) is not None and store.get(1) is None


def test_project_configs_evict_the_least_recently_used():
    from ml_backend.project_configs import ProjectConfigs

    store = ProjectConfigs(max_projects=3, max_bytes=100)
    for project in (1, 2, 3):
        store.put(project, "<View/>")
    store.get(1)  # used: now the newest
    store.put(4, "<View/>")
    assert [p for p in (1, 2, 3, 4) if store.get(p)] == [1, 3, 4]
    store.put(5, "x" * 90)  # the size bound evicts too
    assert len(store) == 2 and store.size <= 100
    store.put(6, "x" * 101)  # larger than the whole store: not kept, nothing else lost for it
    assert store.get(6) is None and store.get(5) is not None
    store.put(5, "<View/>")  # replacing an entry counts its new size only
    assert store.size == sum(len(store.get(p).label_config) for p in (4, 5) if store.get(p))


@pytest.mark.parametrize("project", ["²", "²³.1", "٣.1763", "9" * 256 + ".1763", 2**64, -1, True, {"id": 1}, 1.5])
def test_unreadable_project_ids_are_422_naming_the_field(project):
    client = create_app(isolated_settings(redis_url=""), model=_VersionOnly()).test_client()
    reply = client.post("/setup", json={"project": project, "schema": CONFIG})
    assert reply.status_code == 422 and "'project'" in reply.json["error"], reply.json


@pytest.mark.parametrize(("path", "body"), [
    ("/setup", {"project": "2.1", "schema": "not xml"}),
    ("/setup", {"project": "2.1", "schema": {"xml": "<View/>"}}),
    ("/predict", {"tasks": [{"id": 1, "data": {"text": "a"}}], "label_config": "<View"}),
    ("/predict", {"tasks": [{"id": 1, "data": "text"}], "label_config": CONFIG}),
    ("/webhook", {"action": "TASKS_CREATED", "project": {"id": 2}, "tasks": 5}),
    ("/webhook", {"action": "TASKS_CREATED", "project": {"id": 2}, "tasks": True}),
])
def test_bodies_the_backend_cannot_use_are_422(path, body):
    client = create_app(isolated_settings(redis_url=""), model=_VersionOnly()).test_client()
    reply = client.post(path, json=body)
    assert reply.status_code == 422 and reply.json["error"], reply.json
