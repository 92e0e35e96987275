"""The Label Studio adapter (routing/labelstudio.py) on recorded HTTP shapes (requests-mock); the integration
test runs the same calls against the real server."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests_mock as rm

from routing.labelstudio import COMMUNITY, ENTERPRISE, LabelStudioAPI, LabelStudioError, assigned_filter, user_id

URL = "http://ls.test"


@pytest.fixture
def api() -> LabelStudioAPI:
    return LabelStudioAPI(URL, "admin-token")


def test_needs_url_and_token(monkeypatch) -> None:
    with pytest.raises(ValueError):
        LabelStudioAPI("", "x")
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    with pytest.raises(RuntimeError, match="LABEL_STUDIO_URL"):
        LabelStudioAPI.from_env()


def test_community_is_probed_by_the_missing_assignment_route(api) -> None:
    with rm.Mocker() as m:
        m.get(f"{URL}/api/version", json={"release": "1.23.2", "edition": "Community"})
        probe = m.get(f"{URL}/api/projects/3/tasks/assignees", status_code=404, text="<html>")
        assert api.edition(3) == COMMUNITY
        assert api.edition(3) == COMMUNITY  # cached
        assert probe.call_count == 1
        assert m.request_history[0].headers["Authorization"] == "Token admin-token"


@pytest.mark.parametrize("status", [405, 200, 400])
def test_enterprise_is_picked_when_the_route_exists(api, status) -> None:
    with rm.Mocker() as m:
        m.get(f"{URL}/api/version", json={"release": "2.20"})
        m.get(f"{URL}/api/projects/3/tasks/assignees", status_code=status, json={})
        assert api.edition(3) == ENTERPRISE


def test_enterprise_named_by_the_version_endpoint(api) -> None:
    with rm.Mocker() as m:
        m.get(f"{URL}/api/version", json={"edition": "Enterprise"})
        assert api.edition(None) == ENTERPRISE


def test_a_broken_probe_is_an_error_not_a_guess(api) -> None:
    with rm.Mocker() as m:
        m.get(f"{URL}/api/version", json={})
        m.get(f"{URL}/api/projects/3/tasks/assignees", status_code=502, text="bad gateway")
        with pytest.raises(LabelStudioError) as caught:
            api.edition(3)
        assert caught.value.status == 502


def test_overlap_data_meta_and_close(api) -> None:
    with rm.Mocker() as m:
        patch = m.patch(f"{URL}/api/tasks/5/", json={"id": 5})
        api.set_overlap(5, 3)
        api.replace_task_data(5, {"text": "x", "assigned_to": "c@x"})
        api.replace_task_meta(5, {"gold": "A"})
        api.close_task(5)
        bodies = [r.json() for r in patch.request_history]
    assert bodies == [{"overlap": 3, "is_labeled": False}, {"data": {"text": "x", "assigned_to": "c@x"}},
                      {"meta": {"gold": "A"}}, {"is_labeled": True}]


def test_import_annotate_and_find(api) -> None:
    with rm.Mocker() as m:
        m.post(f"{URL}/api/projects/7/import", json={"task_ids": [70, 71]})
        assert api.import_tasks(7, [{"data": {}}, {"data": {}}]) == [70, 71]
        assert m.last_request.qs == {"return_task_ids": ["true"]}
        m.post(f"{URL}/api/tasks/70/annotations/", status_code=201, json={"id": 9})
        assert api.create_annotation(70, [{"r": 1}], completed_by=4, lead_time=2.0) == {"id": 9}
        assert m.last_request.json() == {"result": [{"r": 1}], "completed_by": 4, "lead_time": 2.0}
        m.get(f"{URL}/api/tasks/", json={"tasks": [{"id": 70, "data": {"crowdgate_source_task": 5}},
                                                   {"id": 71, "data": {"crowdgate_source_task": 55}}]})
        assert [t["id"] for t in api.find_tasks(7, "crowdgate_source_task", 5)] == [70]
        query = json.loads(parse_qs(urlsplit(m.last_request.url).query)["query"][0])  # qs lower-cases
        assert query["filters"]["items"][0] == {"filter": "filter:tasks:data.crowdgate_source_task",
                                                "operator": "equal", "type": "Number", "value": 5}


def test_annotator_views_are_reused_and_filter_on_equal(api) -> None:
    with rm.Mocker() as m:
        m.get(f"{URL}/api/dm/views/", json=[{"id": 3, "data": {"title": "crowdgate: c@x"}}])
        assert api.annotator_view(7, "c@x") == 3
        created = m.post(f"{URL}/api/dm/views/", status_code=201, json={"id": 4})
        assert api.annotator_view(7, "d@x") == 4
        assert created.last_request.json() == {"project": 7, "data": {"title": "crowdgate: d@x",
                                                                      "filters": assigned_filter("d@x")}}
    assert assigned_filter("d@x")["items"][0]["operator"] == "equal"


def test_next_task_is_none_when_the_queue_is_empty(api) -> None:
    with rm.Mocker() as m:
        m.get(f"{URL}/api/projects/7/next/", status_code=404, json={"id": "uuid", "detail": "There are no tasks"})
        assert api.as_user("c-token").next_task(7, view=3) is None
        assert m.last_request.qs == {"view": ["3"]} and m.last_request.headers["Authorization"] == "Token c-token"
        m.get(f"{URL}/api/projects/7/next/", json={"id": 70, "data": {}})
        assert api.next_task(7)["id"] == 70
        m.get(f"{URL}/api/projects/7/next/", status_code=500, text="boom")
        with pytest.raises(LabelStudioError, match="500"):
            api.next_task(7)


def test_enterprise_assignment_and_pause_calls(api) -> None:
    with rm.Mocker() as m:
        assign = m.post(f"{URL}/api/projects/3/tasks/assignees", status_code=201, json={})
        api.assign(3, 5, [9])
        assert assign.last_request.json() == {"type": "AN", "users": [9],
                                              "selectedItems": {"all": False, "included": [5]}}
        unassign = m.delete(f"{URL}/api/projects/3/tasks/5/assignees", status_code=204)
        api.unassign(3, 5)
        assert parse_qs(urlsplit(unassign.last_request.url).query) == {"type": ["AN"]}
        m.get(f"{URL}/api/projects/3/members/9/pauses/", json=[])
        pause = m.post(f"{URL}/api/projects/3/members/9/pauses/", status_code=201, json={"id": 1})
        api.pause(3, 9, "failed the exam")
        assert pause.last_request.json() == {"reason": "ANNOTATOR_EVALUATION", "verbose_reason": "failed the exam"}
        m.get(f"{URL}/api/projects/3/members/9/pauses/", json=[{"id": 1, "deleted_at": None}])
        assert api.pause(3, 9, "again") == {"id": 1, "deleted_at": None}
        assert pause.call_count == 1  # an active pause is not duplicated


def test_failures_carry_the_status(api) -> None:
    with rm.Mocker() as m:
        m.get(f"{URL}/api/tasks/5/", status_code=404, text="not found")
        with pytest.raises(LabelStudioError) as caught:
            api.task(5)
        assert (caught.value.status, caught.value.method) == (404, "GET")
        m.get(f"{URL}/api/tasks/6/", exc=ConnectionError("refused"))
        with pytest.raises(Exception, match="refused"):
            api.task(6)


def test_user_ids_from_either_shape() -> None:
    assert user_id(4) == 4 and user_id({"id": 4, "email": "x"}) == 4
    assert user_id(None) is None and user_id(True) is None
