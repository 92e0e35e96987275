"""/metrics: scraped and parsed with prometheus_client's own parser, in-process and under real gunicorn (several
processes, multiprocess mode); the Grafana dashboard and the alerting rules name only metrics that exist; and the
admin API through gunicorn."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from crowdgate.web import create_app
from routing.audit import AuditLog
from routing.state import RoutingState
from scripts.services import start_web
from tests.conftest import fixture_json
from tests.test_dashboard import PREFIX, PROJECT, SECRET, TOKEN, bearer, seed

ROOT = Path(__file__).resolve().parents[1]


def parse(text: str) -> dict[str, float]:
    """sample name{labels} -> value, and every sample name alone -> the sum over its labels."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
            samples[s.name] = samples.get(s.name, 0.0) + s.value
    return samples


def webhook_body(annotation: int) -> bytes:
    body = fixture_json("webhook_annotation_created.json")
    body["project"]["id"] = PROJECT
    body["annotation"].update(id=annotation, unique_id=str(uuid.uuid4()), project=PROJECT)
    return json.dumps(body).encode()


def monitored_names() -> set[str]:
    """Every crowdgate_ metric the Grafana dashboard's queries and the alerting rules name."""
    dashboard = json.loads((ROOT / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((ROOT / "monitoring" / "prometheus-rules.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 20
    return {name for e in exprs for name in re.findall(r"\bcrowdgate_[a-z_]+", e)}


@pytest.fixture
def app(redis_service, redis_conn, monkeypatch):
    from tests.state_isolation import use_settings

    settings = use_settings(monkeypatch, redis_url=redis_service.url, key_prefix=PREFIX, admin_token=TOKEN,
                            webhook_secret=SECRET)
    return create_app(settings)


def test_scrape_counts_webhooks_state_and_audit(app, redis_conn):
    seed(redis_conn)
    client = app.test_client()
    for i in range(3):
        answer = client.post("/hooks/labelstudio", data=webhook_body(900 + i), content_type="application/json",
                             headers={"X-Crowdgate-Secret": SECRET})
        assert answer.status_code == 200, answer.get_data(as_text=True)
    assert client.post("/hooks/labelstudio", data=webhook_body(999), content_type="application/json",
                       headers={"X-Crowdgate-Secret": "wrong"}).status_code == 401
    audit = AuditLog(redis_conn, PREFIX)
    for _ in range(2):
        audit.record("action", "escalate", PROJECT, 1, [1], "disputed")
    audit.record("alert", "sla_breach", PROJECT, 1, [], "late")

    page = client.get("/metrics")
    assert page.status_code == 200 and page.mimetype == "text/plain"
    m = parse(page.get_data(as_text=True))
    assert m["crowdgate_webhook_requests_total{code=200}"] >= 3
    assert m["crowdgate_webhook_requests_total{code=401}"] >= 1
    assert m["crowdgate_webhook_duration_seconds_count"] >= 4
    assert m["crowdgate_webhook_events_received_total{outcome=queued}"] >= 3
    assert m["crowdgate_redis_up"] == 1
    assert m["crowdgate_queue_depth{queue=inbox}"] == 3  # the three events wait in the stream inbox
    assert m["crowdgate_submissions_stored"] == 60 and m["crowdgate_projects"] == 1
    assert m["crowdgate_escalations_total"] == 2 and m["crowdgate_sla_breaches_total"] == 1
    assert m["crowdgate_audit_entries_total{kind=alert}"] >= 1
    # counted once: a second scrape adds nothing, a new entry adds one
    again = parse(client.get("/metrics").get_data(as_text=True))
    assert again["crowdgate_escalations_total"] == 2
    audit.record("action", "escalate", PROJECT, 2, [2], "disputed")
    assert parse(client.get("/metrics").get_data(as_text=True))["crowdgate_escalations_total"] == 3

    text = page.get_data(as_text=True)
    assert not re.search(r'(annotator|user|uid)="', text)  # no per-annotator labels
    names = {re.sub(r"\{.*", "", k) for k in m}
    missing = {n for n in monitored_names() if n not in names}
    assert not missing, f"the dashboard or the rules name metrics /metrics does not serve: {missing}"


def test_redis_down_scrape_says_so(redis_service, monkeypatch):
    from scripts.processes import free_port
    from tests.state_isolation import use_settings

    settings = use_settings(monkeypatch, redis_url=f"redis://127.0.0.1:{free_port()}/0", key_prefix=PREFIX)
    m = parse(create_app(settings).test_client().get("/metrics").get_data(as_text=True))
    assert m["crowdgate_redis_up"] == 0


def test_gunicorn_multiprocess_metrics_and_admin_api(redis_service, redis_conn, log_dir, tmp_path):
    seed(redis_conn)
    env = {**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX,
           "CROWDGATE_WEBHOOK_SECRET": SECRET, "CROWDGATE_ADMIN_TOKEN": TOKEN,
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    web = start_web(env, log_dir, workers=2)
    try:
        sent = 12
        for i in range(sent):
            assert requests.post(f"{web.url}/hooks/labelstudio", data=webhook_body(800 + i), timeout=10,
                                 headers={"X-Crowdgate-Secret": SECRET,
                                          "Content-Type": "application/json"}).status_code == 200
        assert len(list((tmp_path / "prom").glob("counter_*.db"))) == 2  # both processes counted
        for _ in range(4):  # whichever process answers, it adds up both
            m = parse(requests.get(f"{web.url}/metrics", timeout=10).text)
            assert m["crowdgate_webhook_requests_total{code=200}"] == sent
            assert m["crowdgate_webhook_duration_seconds_count"] == sent

        url = f"{web.url}/admin/api/projects/{PROJECT}/annotators/3/tier"
        tier = RoutingState(redis_conn, PREFIX).policy(PROJECT).tier_names[-1]
        assert requests.post(url, json={"tier": tier}, headers=bearer(SECRET), timeout=10).status_code == 401
        assert requests.post(url, json={"tier": tier}, headers={"X-Crowdgate-Secret": SECRET},
                             timeout=10).status_code == 401
        done = requests.post(url, json={"tier": tier, "reason": "through gunicorn"}, headers=bearer(), timeout=10)
        assert done.status_code == 200, done.text
        assert RoutingState(redis_conn, PREFIX).tiers(PROJECT) == {3: tier}
        assert requests.get(f"{web.url}/dashboard/{PROJECT}", headers=bearer(), timeout=10).status_code == 200
        assert parse(requests.get(f"{web.url}/metrics", timeout=10).text)["crowdgate_admin_actions_total"] == 1
    finally:
        web.stop()
    assert TOKEN not in (log_dir / "web.log").read_text()  # the token is never logged
