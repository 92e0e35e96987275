"""The Label Studio adapter (core/labelstudio.py): auth, errors, retries and timeouts against a tiny local HTTP
server, and the calls' HTTP shapes on recorded answers (requests-mock). The integration tests run the same calls
against the real server."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests_mock as rm

from core.labelstudio import (
    COMMUNITY,
    ENTERPRISE,
    LabelStudioClient,
    LabelStudioError,
    RetryPolicy,
    assigned_filter,
    user_id,
)
from core.settings import Settings

URL = "http://ls.test"
FAST = RetryPolicy(retries=2, backoff_s=0.01)

# (status, JSON body, seconds to wait first) for a request, given (method, path, headers).
Answer = tuple[int, Any, float]


class Recorder:
    """A local HTTP server answering with ``route`` and keeping every request it saw."""

    def __init__(self, route: Callable[[str, str, dict[str, str], Any], Answer]) -> None:
        self.route = route
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorder.seen.append((self.command, self.path, headers, body))
                status, reply, wait = recorder.route(self.command, self.path, headers, body)
                time.sleep(wait)
                data = json.dumps(reply).encode()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _, _ in self.seen if method is None or m == method]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def start(route: Callable[[str, str, dict[str, str], Any], Answer]) -> Recorder:
        started.append(Recorder(route))
        return started[-1]

    yield start
    for recorder in started:
        recorder.close()


def jwt(**claims: Any) -> str:
    """An unsigned JWT with ``claims`` (Label Studio would check the signature; the client does not)."""
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


PAGE = {"tasks": [{"id": 1, "data": {"text": "a"}}], "total": 1}


def listing(path: str) -> Answer:
    """The task list as Label Studio pages it: one page, then 404 (where the SDK's pager stops)."""
    page = int(parse_qs(urlsplit(path).query).get("page", ["1"])[0])
    return (200, PAGE, 0) if page == 1 else (404, {"detail": "Invalid page."}, 0)


def test_a_legacy_token_goes_as_token_on_raw_and_sdk_calls(serve) -> None:
    ls = serve(lambda m, p, h, b: listing(p) if p.startswith("/api/tasks") else (200, {"id": 3}, 0))
    client = LabelStudioClient(ls.url, "legacy-key", retry=FAST)
    client.project(3)
    assert [t["id"] for t in client.tasks(3)] == [1]  # through the SDK
    assert [h["authorization"] for _, _, h, _ in ls.seen] == ["Token legacy-key"] * 3
    assert not any("refresh" in p for p in ls.paths())


def pat_server(serve, refresh: str, lifetimes: list[float]) -> Recorder:
    """A server whose refresh exchange hands out access tokens living ``lifetimes`` seconds, in turn."""
    accesses = iter(lifetimes)

    def route(method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        if path == "/api/token/refresh/":
            assert method == "POST" and body == {"refresh": refresh}
            return 200, {"access": jwt(token_type="access", exp=time.time() + next(accesses))}, 0
        return listing(path) if path.startswith("/api/tasks") else (200, {"id": 3}, 0)

    return serve(route)


def bearers(ls: Recorder) -> list[str]:
    return [h.get("authorization", "") for _, p, h, _ in ls.seen if p != "/api/token/refresh/"]


def test_a_personal_access_token_is_exchanged_once_and_shared_with_the_sdk(serve) -> None:
    refresh = jwt(token_type="refresh", exp=time.time() + 3600)
    ls = pat_server(serve, refresh, [600])
    client = LabelStudioClient(ls.url, refresh, retry=FAST)
    client.project(3)
    client.tasks(3)  # through the SDK: two pages
    client.project(3)
    assert ls.paths().count("/api/token/refresh/") == 1 and ls.paths()[0] == "/api/token/refresh/"
    sent = bearers(ls)
    assert len(sent) == 4 and sent[0].startswith("Bearer ") and set(sent) == {sent[0]}


def test_an_access_token_about_to_expire_is_exchanged_again(serve) -> None:
    refresh = jwt(token_type="refresh", exp=time.time() + 3600)
    ls = pat_server(serve, refresh, [10, 600])  # 10 s is inside REFRESH_EARLY_S
    client = LabelStudioClient(ls.url, refresh, retry=FAST)
    for _ in range(3):
        client.project(3)
    assert ls.paths().count("/api/token/refresh/") == 2
    first, second, third = bearers(ls)
    assert first != second == third


def test_an_expired_personal_access_token_is_refused_at_once() -> None:
    with pytest.raises(LabelStudioError, match="expired") as caught:
        LabelStudioClient(URL, jwt(token_type="refresh", exp=time.time() - 5))
    assert caught.value.status == 401


def test_a_refused_refresh_is_an_error_with_labelstudios_message(serve) -> None:
    ls = serve(lambda m, p, h, b: (401, {"detail": "Token is invalid or expired"}, 0))
    client = LabelStudioClient(ls.url, jwt(token_type="refresh", exp=time.time() + 60), retry=FAST)
    with pytest.raises(LabelStudioError) as caught:
        client.project(1)
    assert (caught.value.status, caught.value.method) == (401, "POST")
    assert caught.value.url == f"{ls.url}/api/token/refresh/"
    assert caught.value.message == "Token is invalid or expired"


def test_errors_carry_status_method_url_and_message(serve) -> None:
    ls = serve(lambda m, p, h, b: (400, {"validation_errors": {"label_config": ["bad XML"]}}, 0))
    client = LabelStudioClient(ls.url, "k", retry=FAST)
    with pytest.raises(LabelStudioError) as caught:
        client.patch_task(5, overlap=2)
    err = caught.value
    assert (err.status, err.method, err.url) == (400, "PATCH", f"{ls.url}/api/tasks/5/")
    assert json.loads(err.message) == {"label_config": ["bad XML"]} and "bad XML" in str(err)
    with pytest.raises(LabelStudioError) as caught:  # the SDK's failures come out the same way
        client.create_project("t", "<View/>")
    assert (caught.value.status, caught.value.method) == (400, "POST") and "bad XML" in caught.value.message


def flaky(failures: int) -> Callable[[str, str, dict[str, str], Any], Answer]:
    """503 for the first ``failures`` requests to each (method, path), then 200."""
    counts: dict[tuple[str, str], int] = {}

    def route(method: str, path: str, headers: dict[str, str], body: Any) -> Answer:
        key = (method, urlsplit(path).path)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] <= failures:
            return 503, {"detail": "busy"}, 0
        if path.startswith("/api/tasks"):
            return listing(path)
        return (201 if method == "POST" else 200), {"id": 9}, 0
    return route


def test_gets_are_retried_on_503_and_posts_never(serve) -> None:
    ls = serve(flaky(2))
    client = LabelStudioClient(ls.url, "k", retry=FAST)
    assert client.project(3) == {"id": 9}
    assert ls.paths("GET") == ["/api/projects/3/"] * 3
    with pytest.raises(LabelStudioError) as caught:
        client.create_annotation(4, [])
    assert caught.value.status == 503 and ls.paths("POST") == ["/api/tasks/4/annotations/"]
    with pytest.raises(LabelStudioError):
        client.patch_task(4, is_labeled=True)  # PATCH is not idempotent here either
    assert len(ls.paths("PATCH")) == 1


def test_the_sdk_follows_the_same_retry_policy(serve) -> None:
    ls = serve(flaky(2))
    client = LabelStudioClient(ls.url, "k", retry=FAST)
    assert [t["id"] for t in client.tasks(3)] == [1]
    assert len(ls.paths("GET")) == 4  # two 503s, page 1, the 404 after it
    with pytest.raises(LabelStudioError) as caught:
        client.create_webhook(3, "http://cg.test/hooks/labelstudio")
    assert caught.value.status == 503 and ls.paths("POST") == ["/api/webhooks/"]


def test_retries_stop_after_the_policys_count(serve) -> None:
    ls = serve(flaky(10))
    with pytest.raises(LabelStudioError) as caught:
        LabelStudioClient(ls.url, "k", retry=FAST).task(1)
    assert caught.value.status == 503 and len(ls.seen) == 1 + FAST.retries


def test_every_call_has_a_timeout(serve) -> None:
    ls = serve(lambda m, p, h, b: (200, PAGE, 2.0 if "page=2" not in p else 0))
    client = LabelStudioClient(ls.url, "k", timeout=0.3, retry=FAST)
    for call in (lambda: client.task(1), lambda: client.tasks(1)):
        start = time.monotonic()
        with pytest.raises(LabelStudioError) as caught:
            call()
        assert caught.value.status == 0 and time.monotonic() - start < 1.5


def test_connection_errors_have_status_zero() -> None:
    with pytest.raises(LabelStudioError) as caught:
        LabelStudioClient("http://127.0.0.1:9", "k", retry=RetryPolicy(retries=0)).whoami()
    assert caught.value.status == 0 and caught.value.url == "http://127.0.0.1:9/api/current-user/whoami"


# -- the calls' shapes --------------------------------------------------------------------------------------


@pytest.fixture
def api() -> LabelStudioClient:
    return LabelStudioClient(URL, "admin-token")


def test_needs_url_and_key() -> None:
    with pytest.raises(ValueError):
        LabelStudioClient("", "x")
    with pytest.raises(RuntimeError, match="LABEL_STUDIO_URL"):
        LabelStudioClient.from_settings(Settings(label_studio_api_key="x"))


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
        m.get(f"{URL}/api/projects/3/tasks/assignees", status_code=500, text="boom")
        with pytest.raises(LabelStudioError) as caught:
            api.edition(3)
        assert caught.value.status == 500


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


def test_tasks_by_id_go_through_the_list_api(serve) -> None:
    ls = serve(lambda m, p, h, b: listing(p))
    assert [t["data"] for t in LabelStudioClient(ls.url, "k").tasks(7, ids=[70])] == [{"text": "a"}]
    params = parse_qs(urlsplit(ls.paths()[0]).query)
    assert json.loads(params["query"][0]) == {"selectedItems": {"all": False, "included": [70]}}
    assert params["project"] == ["7"] and params["fields"] == ["all"]


def test_users_are_made_inside_the_organization(api) -> None:
    with rm.Mocker() as m:
        m.post(f"{URL}/api/users/", status_code=201, json={"id": 12})
        moved = m.patch(f"{URL}/api/users/12/", json={"id": 12})
        assert api.create_user("a@x", organization=1) == 12
        assert moved.last_request.json() == {"active_organization": 1}


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


def test_user_ids_from_either_shape() -> None:
    assert user_id(4) == 4 and user_id({"id": 4, "email": "x"}) == 4
    assert user_id(None) is None and user_id(True) is None
