"""Admin actions behind the admin token, and the live dashboard, on the real web app and a private Redis."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
import redis

from core.settings import Settings
from crowdgate.admin import AdminActions, AdminError
from crowdgate.pipeline import handle_events
from crowdgate.report.data import read_project
from crowdgate.web import create_app
from qa_hooks.events import parse_body
from qa_hooks.ledger import Ledger
from routing import pausing
from routing.audit import AuditLog
from routing.state import RoutingState
from tests.conftest import fixture_json
from tests.state_isolation import use_settings

PROJECT, PREFIX = 2, "tdash"
TOKEN, SECRET = "admin-token-7f3a", "webhook-secret-91c2"
LABELS = ("Positive", "Negative")


def crowd_events(tasks: int = 12, annotators: int = 5, project: int = PROJECT) -> list[dict[str, Any]]:
    """Every annotator labels every task; annotator 5 always answers Negative (a poor one), the others mostly
    Positive; one skip. Webhook bodies as Label Studio 1.23.2 sends them, parsed as the receiver does."""
    template = fixture_json("webhook_annotation_created.json")
    events, annotation = [], 100
    for task in range(1, tasks + 1):
        for person in range(1, annotators + 1):
            body = json.loads(json.dumps(template))
            label = "Negative" if person == annotators or (task + person) % 7 == 0 else "Positive"
            annotation += 1
            body["project"]["id"] = project
            body["annotation"].update(id=annotation, unique_id=str(uuid.uuid4()), task=task, completed_by=person,
                                      project=project, lead_time=2.0 + person,
                                      was_cancelled=(task, person) == (1, 4),
                                      result=[{**body["annotation"]["result"][0], "value": {"choices": [label]}}])
            body["task"].update(id=task, project=project)
            events.append(parse_body(json.dumps(body).encode()).to_dict())
    return events


def seed(connection: redis.Redis, prefix: str = PREFIX, **kwargs: Any) -> None:
    outcomes = handle_events(crowd_events(**kwargs), prefix, connection)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes


@pytest.fixture
def settings(redis_service, monkeypatch) -> Settings:
    return use_settings(monkeypatch, redis_url=redis_service.url, key_prefix=PREFIX, admin_token=TOKEN,
                        webhook_secret=SECRET, dashboard_cache_s=0.0)


@pytest.fixture
def seeded(redis_conn, settings) -> redis.Redis:
    seed(redis_conn)
    return redis_conn


def bearer(token: str = TOKEN, who: str = "ana") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Crowdgate-Admin-User": who}


# -- the actions themselves ----------------------------------------------------------------------------------


def test_set_tier_is_compare_and_set_and_audited_with_who(seeded):
    actions = AdminActions(seeded, PREFIX)
    tiers = RoutingState(seeded, PREFIX).policy(PROJECT).tier_names
    result = actions.set_tier(PROJECT, 3, tiers[-1], by="cli:test", reason="interviewed")
    assert result["changed"] and result["to" if "to" in result else "tier"] == tiers[-1]
    assert RoutingState(seeded, PREFIX).tiers(PROJECT)[3] == tiers[-1]
    entry = AuditLog(seeded, PREFIX).query(project=PROJECT, action="admin_set_tier")[-1]
    assert entry.annotators == (3,) and entry.job == "admin:cli:test" and entry.evidence["by"] == "cli:test"
    assert entry.evidence["from"] == result["from"] and entry.reason == "interviewed"
    # the same tier again changes nothing and audits nothing
    assert not actions.set_tier(PROJECT, 3, tiers[-1], by="cli:test")["changed"]
    assert len(AuditLog(seeded, PREFIX).query(project=PROJECT, action="admin_set_tier")) == 1


def test_refused_actions_change_nothing(seeded):
    actions = AdminActions(seeded, PREFIX)
    before = len(AuditLog(seeded, PREFIX))
    with pytest.raises(AdminError, match="unknown tier") as unknown:
        actions.set_tier(PROJECT, 3, "wizard", by="t")
    assert unknown.value.status == 400
    with pytest.raises(AdminError, match="no annotator 99") as missing:
        actions.set_tier(PROJECT, 99, RoutingState(seeded, PREFIX).policy(PROJECT).tier_names[0], by="t")
    assert missing.value.status == 404
    with pytest.raises(AdminError, match="not flagged"):
        actions.clear_flag(PROJECT, 3, by="t")
    with pytest.raises(AdminError, match="no task 999"):
        actions.rerun_task(PROJECT, 999, by="t")
    assert len(AuditLog(seeded, PREFIX)) == before
    assert RoutingState(seeded, PREFIX).tiers(PROJECT) == {}


def test_clear_flag_lets_the_labels_count_again(seeded):
    state = RoutingState(seeded, PREFIX)
    state.flag_annotator(PROJECT, 5, "always Negative")
    result = AdminActions(seeded, PREFIX).clear_flag(PROJECT, 5, by="web:ana", reason="reviewed by hand")
    assert result["cleared"] and result["was"] == "always Negative"
    assert 5 not in state.flagged(PROJECT)
    entry = AuditLog(seeded, PREFIX).query(project=PROJECT, annotator=5, action="admin_clear_flag")[-1]
    assert entry.evidence == {"by": "web:ana", "was": "always Negative"}


def test_rerun_task_rescores_and_reroutes_it(seeded):
    ledger = Ledger(seeded, PREFIX)
    version = int(seeded.hget(ledger.keys.task_score(PROJECT, 3), "version"))
    seeded.hdel(ledger.keys.task_score(PROJECT, 3), "agreement")  # a score gone stale (say, a bug since fixed)
    result = AdminActions(seeded, PREFIX).rerun_task(PROJECT, 3, by="web:ana")
    assert ledger.task_score(PROJECT, 3)["agreement"] == pytest.approx(result["agreement"])
    assert result["agreement"] is not None
    assert int(seeded.hget(ledger.keys.task_score(PROJECT, 3), "version")) == version + 1
    entries = AuditLog(seeded, PREFIX).query(project=PROJECT, task=3)
    assert entries[-1].action == "admin_rerun_task" and entries[-1].evidence["by"] == "web:ana"
    # routing decided on the task again (dry-run: no policy bound), after the re-run's scores
    assert any(e.kind == "decision" and e.action.startswith("task:") for e in entries[:-1])


def test_unpause_and_clear_a_review_go_through_pausing(seeded):
    actions = AdminActions(seeded, PREFIX)
    with pytest.raises(AdminError, match="not paused") as exc:
        actions.unpause(PROJECT, 5, by="t")
    assert exc.value.status == 404
    pausing.pause(seeded, PROJECT, 5, "always Negative", by="cron", prefix=PREFIX)
    assert read_project(seeded, PREFIX, PROJECT).annotators[4].paused == "always Negative"
    assert actions.unpause(PROJECT, 5, by="web:ana", reason="false alarm")["unpaused"]
    assert pausing.status_of(seeded, PROJECT, 5, PREFIX).status == "cleared"
    assert 5 not in RoutingState(seeded, PREFIX).flagged(PROJECT)
    entry = AuditLog(seeded, PREFIX).query(project=PROJECT, annotator=5, action="fraud_unpause")[-1]
    assert entry.evidence["by"] == "web:ana" and entry.reason == "false alarm"
    pausing.flag_for_review(seeded, PROJECT, 4, "skips a lot", prefix=PREFIX)
    assert read_project(seeded, PREFIX, PROJECT).annotators[3].flags == ("review: skips a lot",)
    assert actions.clear_flag(PROJECT, 4, by="web:ana")["cleared"]
    assert read_project(seeded, PREFIX, PROJECT).annotators[3].flags == ()


# -- the admin HTTP API -----------------------------------------------------------------------------------------


def test_no_token_configured_answers_403_saying_how(redis_service, redis_conn):
    for token, why in (("", "set CROWDGATE_ADMIN_TOKEN"), (SECRET, "equals a webhook secret")):
        app = create_app(Settings(redis_url=redis_service.url, key_prefix=PREFIX, admin_token=token,
                                  webhook_secret=SECRET))
        client = app.test_client()
        answer = client.post(f"/admin/api/projects/{PROJECT}/annotators/3/tier", json={"tier": "x"},
                             headers=bearer(token or "anything"))
        assert answer.status_code == 403 and why in answer.get_json()["error"]
        page = client.get("/dashboard/")
        assert page.status_code == 403 and why in page.get_data(as_text=True)


def test_api_needs_the_admin_token_not_the_webhook_secret(seeded, settings):
    client = create_app(settings).test_client()
    url = f"/admin/api/projects/{PROJECT}/annotators/3/tier"
    tier = RoutingState(seeded, PREFIX).policy(PROJECT).tier_names[-1]
    for headers in ({}, bearer(SECRET), {"X-Crowdgate-Secret": SECRET}, bearer(TOKEN + " "), bearer(TOKEN[:-1]),
                    {"Authorization": "Basic " + TOKEN}):
        answer = client.post(url, json={"tier": tier}, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert RoutingState(seeded, PREFIX).tiers(PROJECT) == {}
    answer = client.post(url, json={"tier": tier, "reason": "promoted"}, headers=bearer())
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert RoutingState(seeded, PREFIX).tiers(PROJECT) == {3: tier}
    assert AuditLog(seeded, PREFIX).query(project=PROJECT, action="admin_set_tier")[-1].job == "admin:api:ana"
    # the other header form works too; bad bodies are 4xx with a reason
    assert client.post(url, json={"tier": tier}, headers={"X-Crowdgate-Admin-Token": TOKEN}).status_code == 200
    assert client.post(url, data="not json", headers=bearer()).status_code == 400
    assert client.post(url, json={"tier": "wizard"}, headers=bearer()).status_code == 400
    assert client.post(f"/admin/api/projects/{PROJECT}/annotators/77/tier", json={"tier": tier},
                       headers=bearer()).status_code == 404
    rerun = client.post(f"/admin/api/projects/{PROJECT}/tasks/4/rerun", headers=bearer())
    assert rerun.status_code == 200 and rerun.get_json()["task"] == 4
    report = client.get(f"/admin/api/projects/{PROJECT}/report", headers=bearer()).get_json()
    assert {a["annotator"] for a in report["annotators"]} == {1, 2, 3, 4, 5}


def test_redis_down_is_a_503_not_a_500(redis_service, settings):
    from scripts.processes import free_port

    app = create_app(settings.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    client = app.test_client()
    assert client.get(f"/admin/api/projects/{PROJECT}/report", headers=bearer()).status_code == 503
    page = client.get("/dashboard/", headers=bearer())
    assert page.status_code == 503 and "Redis is not answering" in page.get_data(as_text=True)


# -- the dashboard ------------------------------------------------------------------------------------------------


def _login(client, token: str = TOKEN) -> Any:
    return client.post("/dashboard/login", data={"token": token, "who": "ana", "next": f"/dashboard/{PROJECT}"})


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def test_dashboard_login_pages_and_a_button(seeded, settings):
    client = create_app(settings).test_client()
    first = client.get(f"/dashboard/{PROJECT}")
    assert first.status_code == 302 and "/dashboard/login" in first.headers["Location"]
    assert _login(client, SECRET).status_code == 401  # the webhook secret is not the admin token
    assert client.get("/dashboard/").status_code == 302
    logged = _login(client)
    assert logged.status_code == 303 and logged.headers["Location"] == f"/dashboard/{PROJECT}"
    assert TOKEN not in logged.headers["Set-Cookie"]  # the cookie names the admin, never holds the token

    index = client.get("/dashboard/").get_data(as_text=True)
    assert f'href="/dashboard/{PROJECT}"' in index and "<td>59</td><td>1</td>" in index  # 12 x 5, one skip

    page = client.get(f"/dashboard/{PROJECT}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "https://" not in html and "<script" not in html
    assert len(re.findall(r'<tr class="annotator"', html)) == 5
    assert html.count("<svg") == 3 and 'class="point"' in html
    report = read_project(seeded, PREFIX, PROJECT)
    assert [a.skipped for a in report.annotators] == [0, 0, 0, 1, 0]
    assert report.annotators[4].peer_agreement < report.annotators[0].peer_agreement  # the poor one

    tier = report.tiers[-1]
    form = {"action": "set_tier", "target": "2", "tier": tier}
    assert client.post(f"/dashboard/{PROJECT}/action", data=form).status_code == 403  # no CSRF token
    assert client.post(f"/dashboard/{PROJECT}/action", data={**form, "csrf": "0" * 64}).status_code == 403
    done = client.post(f"/dashboard/{PROJECT}/action", data={**form, "csrf": _csrf(html)})
    assert done.status_code == 303
    assert RoutingState(seeded, PREFIX).tiers(PROJECT) == {2: tier}
    assert AuditLog(seeded, PREFIX).query(project=PROJECT, action="admin_set_tier")[-1].job == "admin:web:ana"
    after = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "set_tier 2" in after and re.search(rf'id="annotator-2".*?<td class="l tier">{tier}</td>', after, re.S)

    trail = client.get(f"/dashboard/{PROJECT}?annotator=2").get_data(as_text=True)
    assert 'id="audit-trail"' in trail and "admin_set_tier" in trail
    assert client.get("/dashboard/9999").status_code == 404
    # logging out ends the session
    client.post("/dashboard/logout", data={"csrf": _csrf(after)})
    assert client.get(f"/dashboard/{PROJECT}").status_code == 302


def test_login_never_redirects_off_site(settings, redis_conn):
    client = create_app(settings).test_client()
    for target in ("https://evil.example/", "//evil.example/", "/dashboard/\\evil"):
        answer = client.post("/dashboard/login", data={"token": TOKEN, "next": target})
        assert answer.headers["Location"] == "/dashboard/"


def test_report_cache_serves_stale_while_it_refreshes_and_drops_on_actions(seeded):
    import time

    from crowdgate.report.data import ReportCache

    cache = ReportCache(ttl_s=0.2)
    first = cache.get(seeded, PREFIX, PROJECT)
    assert cache.get(seeded, PREFIX, PROJECT) is first  # fresh: reused
    RoutingState(seeded, PREFIX).set_tier(PROJECT, 1, "expert")
    time.sleep(0.25)
    assert cache.get(seeded, PREFIX, PROJECT) is first  # stale: served at once, a refresh started
    from tests.conftest import wait_for

    refreshed = wait_for(lambda: (r := cache.get(seeded, PREFIX, PROJECT)) is not first and r, timeout=10,
                         what="the background refresh")
    assert refreshed.annotators[0].tier == "expert"
    assert refreshed.annotators[1] == first.annotators[1]  # unchanged record: the same figures (memoised)
    cache.drop(PREFIX, PROJECT)
    assert cache.get(seeded, PREFIX, PROJECT) is not refreshed


def test_memoised_read_equals_a_fresh_one_after_new_work(seeded):
    memo: dict = {}
    before = read_project(seeded, PREFIX, PROJECT, memo)
    assert read_project(seeded, PREFIX, PROJECT, memo).annotators == before.annotators
    new = crowd_events(tasks=13)[-5]  # annotator 1 labels a 13th task
    assert not isinstance(handle_events([new], PREFIX, seeded)[0], Exception)
    memoised, fresh = read_project(seeded, PREFIX, PROJECT, memo), read_project(seeded, PREFIX, PROJECT)
    assert memoised.annotators == fresh.annotators
    assert memoised.annotators[0].submitted == before.annotators[0].submitted + 1


def test_cli_goes_through_the_same_actions(seeded, redis_service):
    import getpass

    from click.testing import CliRunner

    from crowdgate.admin import admin

    env = {"REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX}
    tier = RoutingState(seeded, PREFIX).policy(PROJECT).tier_names[-1]
    done = CliRunner().invoke(admin, ["set-tier", str(PROJECT), "4", tier, "--reason", "by hand"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["tier"] == tier and RoutingState(seeded, PREFIX).tiers(PROJECT) == {4: tier}
    entry = AuditLog(seeded, PREFIX).query(project=PROJECT, action="admin_set_tier")[-1]
    assert entry.job == f"admin:cli:{getpass.getuser()}"
    refused = CliRunner().invoke(admin, ["clear-flag", str(PROJECT), "4"], env=env)
    assert refused.exit_code == 1 and "not flagged" in refused.output
