"""``crowdgate simulate``: the profiles and the rate limiter (pure), the command's errors, and short simulations
against the real Label Studio (annotators log in, take tasks from /next/, submit as themselves), one of them with
crowdgate's webhook receiver scoring what they submit."""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.labelstudio import LabelStudioClient, user_id
from crowdgate.crowd_profiles import (
    Answer,
    Bot,
    ColludingPair,
    Diligent,
    ProfileMixError,
    ReplayWorker,
    Sloppy,
    Spammer,
    TaskChoices,
    parse_mix,
    synthetic_crowd,
)
from crowdgate.rate_limit import TokenBucket
from crowdgate.replay_crowd import CrowdSetError, ReplayCrowd
from crowdgate.simulate import REPLAY_FIELD, account_password, simulate
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from scripts.processes import free_port
from scripts.seed import SECRET_HEADER
from tests.conftest import crowdgate_stack, wait_for

# The RTE config of label_configs/rte (aliases "1"/"0" are what results store, as in the crowd set).
RTE_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Text name="hypothesis" value="$hypothesis"/>
  <Choices name="entailment" toName="text" choice="single" required="true">
    <Choice value="Entailment" alias="1"/>
    <Choice value="No entailment" alias="0"/>
  </Choices>
</View>"""
FOUR = TaskChoices(0, {"c": ("a", "b", "c", "d")}, {"c": "c"})


def answers(profile, n: int = 4000, seed: int = 7, options=("a", "b", "c", "d"), truth="c") -> list[Answer]:
    rng = random.Random(seed)
    return [profile.answer(TaskChoices(i, {"c": options}, {"c": truth}), rng) for i in range(n)]


def accuracy(given: list[Answer], truth: str = "c") -> float:
    labelled = [a for a in given if a.labels is not None]
    return sum(a.labels["c"] == truth for a in labelled) / len(labelled)


# -- profiles -------------------------------------------------------------------------------------------


def test_diligent_and_sloppy_are_right_as_often_as_their_accuracy_and_skip_at_their_rate():
    for profile, expected in ((Diligent(), 0.92), (Sloppy(), 0.65)):
        given = answers(profile)
        assert accuracy(given) == pytest.approx(expected, abs=0.025)
        assert sum(a.skipped for a in given) / len(given) == pytest.approx(profile.skip_rate, abs=0.012)
        wrong = Counter(a.labels["c"] for a in given if a.labels and a.labels["c"] != "c")
        assert set(wrong) == {"a", "b", "d"}  # mistakes spread over the other options
    diligent_time = statistics.median(a.lead_time for a in answers(Diligent()))
    sloppy_time = statistics.median(a.lead_time for a in answers(Sloppy()))
    assert diligent_time == pytest.approx(14.0, rel=0.1) and sloppy_time == pytest.approx(5.0, rel=0.1)


def test_a_spammer_answers_uniformly_and_a_bot_always_the_first_option_too_fast():
    spam = Counter(a.labels["c"] for a in answers(Spammer()))
    assert all(count / 4000 == pytest.approx(0.25, abs=0.03) for count in spam.values()) and len(spam) == 4
    bot = answers(Bot(), n=500)
    assert {a.labels["c"] for a in bot} == {"a"}
    assert max(a.lead_time for a in bot) < 1.0 < min(a.lead_time for a in answers(Diligent(), n=500)) * 10


def test_without_a_known_truth_a_one_coin_worker_answers_uniformly():
    rng = random.Random(1)
    given = Counter(Diligent(skip_rate=0).answer(TaskChoices(i, {"c": ("x", "y")}), rng).labels["c"]
                    for i in range(2000))
    assert given["x"] / 2000 == pytest.approx(0.5, abs=0.04)


def test_the_colluding_pair_gives_one_answer_per_task_whoever_comes_first():
    pair = ColludingPair(accuracy=0.7)
    rng = random.Random(3)
    first = {i: pair.first.answer(TaskChoices(i, FOUR.options, FOUR.truth), rng) for i in range(0, 600)}
    second = {i: pair.second.answer(TaskChoices(i, FOUR.options, FOUR.truth), rng) for i in range(300, 900)}
    both = range(300, 600)
    assert all(first[i].labels == second[i].labels for i in both)  # the second copied the first
    assert accuracy(list(first.values())) == pytest.approx(0.7, abs=0.05)
    copy_times = [second[i].lead_time for i in both]
    assert statistics.median(copy_times) < statistics.median(first[i].lead_time for i in both)
    late = {i: pair.first.answer(TaskChoices(i, FOUR.options, FOUR.truth), rng) for i in range(600, 900)}
    assert all(late[i].labels == second[i].labels for i in range(600, 900))  # and the first copies the second


def test_a_replay_worker_gives_their_recorded_label_and_skips_items_they_never_saw():
    worker = ReplayWorker("W1", {"25": "0", "35": "1"}, "entailment")
    rng = random.Random(0)
    options = {"entailment": ("1", "0")}
    assert worker.answer(TaskChoices(1, options, item="25"), rng).labels == {"entailment": "0"}
    assert worker.answer(TaskChoices(2, options, item="35"), rng).labels == {"entailment": "1"}
    assert worker.answer(TaskChoices(3, options, item="99"), rng).skipped


def test_the_same_seed_gives_the_same_answers():
    assert answers(Sloppy(), n=200, seed=11) == answers(Sloppy(), n=200, seed=11)
    assert answers(Sloppy(), n=200, seed=11) != answers(Sloppy(), n=200, seed=12)


def test_parse_mix_reads_counts_and_says_what_is_wrong():
    assert parse_mix("diligent=5, sloppy=2,spammer=1,bot=1,colluding_pair=1") == {
        "diligent": 5, "sloppy": 2, "spammer": 1, "bot": 1, "colluding_pair": 1}
    assert parse_mix("bot") == {"bot": 1}
    for bad, says in (("lazy=2", "unknown profile 'lazy'"), ("bot=x", "whole number"), ("bot=1,bot=2", "twice"),
                      ("bot=-1", "negative"), ("diligent=0", "names no annotator"), ("", "names no annotator")):
        with pytest.raises(ProfileMixError, match=says):
            parse_mix(bad)


def test_a_synthetic_crowd_names_each_annotator_and_a_pair_is_two_accounts_sharing_one_book():
    crowd = synthetic_crowd({"diligent": 2, "bot": 1, "colluding_pair": 1})
    assert [name for name, _ in crowd] == ["diligent-1", "diligent-2", "bot-1", "colluding-1a", "colluding-1b"]
    assert crowd[3][1].book is crowd[4][1].book
    assert crowd[0][1] is not crowd[1][1]


# -- the rate limiter -----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_token_bucket_spaces_events_at_its_rate_after_a_burst():
    clock = FakeClock()
    bucket = TokenBucket(2.0, burst=3, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(7)]
    assert waits[:3] == [0.0, 0.0, 0.0]  # the burst
    assert waits[3:] == pytest.approx([0.5, 0.5, 0.5, 0.5])
    assert clock.now == pytest.approx(102.0)
    clock.now += 60  # an idle minute refills only up to the burst
    assert [bucket.acquire() for _ in range(4)] == pytest.approx([0, 0, 0, 0.5])


def test_the_token_bucket_holds_many_threads_to_the_rate_and_none_means_no_limit():
    bucket = TokenBucket(40.0, burst=1)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [bucket.acquire() for _ in range(5)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 19 / 40 * 0.95  # 20 events, the first free
    assert TokenBucket(None).acquire() == 0.0
    with pytest.raises(ValueError):
        TokenBucket(-1)


def test_a_stop_ends_the_wait_at_once():
    bucket = TokenBucket(0.1, burst=1)
    bucket.acquire()
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    bucket.acquire(stop)
    assert time.monotonic() - started < 1.0


# -- crowd sets, accounts -------------------------------------------------------------------------------


def test_the_shipped_rte_crowd_loads_with_its_workers_items_and_gold():
    rte = ReplayCrowd.load("rte")
    assert len(rte.items) == 800 and len(rte.gold) == 800
    assert sum(len(a) for a in rte.labels.values()) == 8000
    assert set(rte.labels["A2K5ICP43ML4PW"].values()) <= {"0", "1"}
    small = rte.restricted_to({"25"})
    assert sorted(small.workers) == sorted(rte.workers_of("25")) and small.items == {"25"}


def test_a_malformed_crowd_set_names_the_file_and_line(tmp_path: Path):
    (tmp_path / "bad.labels.csv").write_text("item,worker,label\n1,W,0\n2,,1\n")
    with pytest.raises(CrowdSetError, match=r"bad\.labels\.csv, line 3"):
        ReplayCrowd.load("bad", tmp_path)
    (tmp_path / "nohead.labels.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CrowdSetError, match="lacks item, label, worker"):
        ReplayCrowd.load("nohead", tmp_path)
    with pytest.raises(CrowdSetError, match="not found"):
        ReplayCrowd.load("missing", tmp_path)


def test_account_passwords_are_stable_per_key_and_email():
    assert account_password("k", "a@x") == account_password("k", "a@x")
    assert len({account_password("k", "a@x"), account_password("k2", "a@x"), account_password("k", "b@x")}) == 3


# -- the command's errors -------------------------------------------------------------------------------


def run_cli(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(simulate, args, env=env, catch_exceptions=False)


def test_usage_errors_exit_2_with_the_reason():
    env = {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "x"}
    both = run_cli(["1", "--replay", "rte", "--profiles", "bot=1"], env)
    assert both.exit_code == 2 and "exactly one of --replay" in both.output
    assert run_cli(["1"], env).exit_code == 2
    bad = run_cli(["1", "--profiles", "lazy=2"], env)
    assert bad.exit_code == 2 and "unknown profile 'lazy'" in bad.output


def test_label_studio_down_or_unset_exits_3_quickly_saying_what_to_do():
    unset = run_cli(["1", "--profiles", "bot=1"], {"LABEL_STUDIO_URL": "", "LABEL_STUDIO_API_KEY": ""})
    assert unset.exit_code == 3 and "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in unset.output
    started = time.monotonic()
    down = run_cli(["1", "--profiles", "bot=1"],
                   {"LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}", "LABEL_STUDIO_API_KEY": "x"})
    assert down.exit_code == 3 and "cannot read project 1" in down.output and "is it running" in down.output
    assert time.monotonic() - started < 15
    missing = run_cli(["1", "--replay", "no-such-set"], {"LABEL_STUDIO_URL": "http://127.0.0.1:9",
                                                         "LABEL_STUDIO_API_KEY": "x"})
    assert missing.exit_code == 3 and "crowd set 'no-such-set' not found" in missing.output


# -- against the real Label Studio ----------------------------------------------------------------------


def ls_env(labelstudio, redis_url: str | None = None, prefix: str = "cg") -> dict[str, str]:
    """The command's environment: this Label Studio, and a Redis for crowdgate's gold (none answers by default)."""
    return {"LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_API_KEY": labelstudio.token,
            "REDIS_URL": redis_url or f"redis://127.0.0.1:{free_port()}/0", "CROWDGATE_KEY_PREFIX": prefix}


def new_project(admin: LabelStudioClient, title: str, tasks: list[dict], overlap: int) -> int:
    project = admin.create_project(title, RTE_CONFIG, maximum_annotations=overlap)
    admin.import_tasks(project, tasks)
    return project


def held_by_user(admin: LabelStudioClient, project: int) -> dict[int, list[dict]]:
    """Label Studio's own record: every annotation of the project, by ``completed_by``."""
    found: dict[int, list[dict]] = {}
    for task in admin.export(project):
        for annotation in task["annotations"]:
            found.setdefault(user_id(annotation["completed_by"]), []).append({**annotation, "task_id": task["id"]})
    return found


@pytest.mark.integration
def test_three_annotators_log_in_take_their_tasks_from_next_and_submit_as_themselves(labelstudio):
    admin = LabelStudioClient(labelstudio.url, labelstudio.token)
    tasks = [{"data": {"text": f"text {i}", "hypothesis": f"hypothesis {i}", "item": f"s{i}"},
              "meta": {"gold": "0"} if i < 2 else {}} for i in range(5)]
    project = new_project(admin, "simulate: 3 x 5", tasks, overlap=3)
    result = run_cli([str(project), "--profiles", "diligent=2,bot=1", "--rate", "20", "--seed", "1", "--json"],
                     ls_env(labelstudio))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    held = held_by_user(admin, project)
    users = {u["email"]: int(u["id"]) for u in admin.users()}
    assert len(report["annotators"]) == 3 and report["errors"] == 0
    assert report["truth"] == {"gold": 2, "latent": 3}  # meta.gold where there is one
    for person in report["annotators"]:
        mine = held[person["user"]]
        assert users[person["email"]] == person["user"]  # a real account, submitting as themselves
        assert person["queue"] == "next" and person["served"] == 5 and person["stopped"] == "queue empty"
        assert person["submitted"] == sum(not a["was_cancelled"] for a in mine)
        assert person["skipped"] == sum(a["was_cancelled"] for a in mine)
        assert sorted(a["task_id"] for a in mine) == sorted(t for t in admin.task_ids(project))  # each task once
        assert person["lead_time_s"] == pytest.approx(sum(a["lead_time"] for a in mine), abs=0.01)
    bot = next(p for p in report["annotators"] if p["kind"] == "bot")
    assert {a["result"][0]["value"]["choices"][0] for a in held[bot["user"]]} == {"1"}  # always the first option
    assert max(a["lead_time"] for a in held[bot["user"]]) < 1.0
    assert report["submitted"] + report["skipped"] == sum(len(v) for v in held.values()) == 15

    # A second run logs the same people back in; nothing is left in their queues.
    again = json.loads(run_cli([str(project), "--profiles", "diligent=2,bot=1", "--json"],
                               ls_env(labelstudio)).output)
    assert [p["user"] for p in again["annotators"]] == [p["user"] for p in report["annotators"]]
    assert again["submitted"] == again["skipped"] == 0

    # An account that exists without this password cannot log in: counted and reported, exit status 1.
    organization = int(admin.whoami()["active_organization"])
    admin.create_user("sloppy-1@sim.crowdgate.test", organization=organization)
    failed = run_cli([str(project), "--profiles", "sloppy=1", "--json"], ls_env(labelstudio))
    assert failed.exit_code == 1
    failure = json.loads(failed.output)
    assert failure["errors"] == 1 and failure["annotators"][0]["stopped"] == "login failed"


@pytest.mark.integration
def test_an_annotator_routing_gave_a_tab_works_only_the_tasks_assigned_to_them(labelstudio):
    admin = LabelStudioClient(labelstudio.url, labelstudio.token)
    email = "diligent-1@sim.crowdgate.test"
    tasks = [{"data": {"text": f"t{i}", "hypothesis": "h", "assigned_to": email if i % 2 else ""}} for i in range(4)]
    project = new_project(admin, "simulate: assigned tab", tasks, overlap=1)
    view = admin.annotator_view(project, email)  # what routing's escalation does for the assignee
    result = run_cli([str(project), "--profiles", "diligent=1", "--rate", "20", "--json"], ls_env(labelstudio))
    assert result.exit_code == 0, result.output
    person = json.loads(result.output)["annotators"][0]
    assert person["queue"] == f"view {view}" and person["served"] == 2 and person["stopped"] == "queue empty"
    held = {t["data"]["text"]: len(t["annotations"]) for t in admin.export(project)}
    assert held == {"t0": 0, "t1": 1, "t2": 0, "t3": 1}


@pytest.mark.integration
def test_the_rte_crowd_replays_its_real_labels_through_each_workers_own_tab(labelstudio):
    admin = LabelStudioClient(labelstudio.url, labelstudio.token)
    rte = ReplayCrowd.load("rte")
    items = ["25", "35", "39"]
    tasks = [{"data": {"text": f"item {item}", "hypothesis": "h", "item": item}} for item in items]
    project = new_project(admin, "simulate: rte replay", tasks, overlap=10)
    result = run_cli([str(project), "--replay", "rte", "--rate", "50", "--present", "6", "--json"],
                     ls_env(labelstudio))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    expected = {(worker.lower(), item, rte.labels[worker][item]) for item in items for worker in rte.workers_of(item)}
    emails = {p["user"]: p["email"].split("@")[0] for p in report["annotators"]}
    by_task = {t["id"]: t for t in admin.export(project)}
    replayed = {(emails[user_id(a["completed_by"])], by_task[t]["data"]["item"], a["result"][0]["value"]["choices"][0])
                for t in by_task for a in by_task[t]["annotations"]}
    assert replayed == expected and report["submitted"] == len(expected) and report["unserved"] == 0
    assert all(p["queue"].startswith("view ") for p in report["annotators"])
    assert report["setup_writes"] == 3 and report["truth"] == {}
    assert all(t["data"][REPLAY_FIELD].count("@") == len(rte.workers_of(t["data"]["item"])) for t in by_task.values())


@pytest.mark.integration
def test_submissions_reach_crowdgate_and_are_scored(labelstudio, redis_service, log_dir):
    secret = "simulate-secret"
    with crowdgate_stack(redis_service, log_dir, labelstudio, "sim", secret) as (web, _worker, connection):
        admin = LabelStudioClient(labelstudio.url, labelstudio.token)
        tasks = [{"data": {"text": f"scored {i}", "hypothesis": "h", "item": f"g{i}"}} for i in range(4)]
        project = new_project(admin, "simulate: scored", tasks, overlap=3)
        admin.create_webhook(project, f"{web.url}/hooks/labelstudio", {SECRET_HEADER: secret})
        ledger = Ledger(connection, "sim")
        for task in admin.task_ids(project):  # gold kept where `crowdgate seed` keeps it: not in Label Studio
            ledger.set_meta_gold(project, task, "0")
        result = run_cli([str(project), "--profiles", "diligent=2,bot=1", "--rate", "20", "--seed", "2", "--json"],
                         ls_env(labelstudio, redis_service.url, "sim"))
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["truth"] == {"gold": 4}
        store = SubmissionStore(connection, "sim")
        done = report["submitted"] + report["skipped"]
        wait_for(lambda: store.summary(project)["submissions"] >= done, timeout=60, what="crowdgate to record them")
        summary = store.summary(project)
        by_user = {p["user"]: p for p in report["annotators"]}
        assert summary["submissions"] == done
        for user, row in summary["annotators"].items():
            assert (row["submissions"], row["skips"]) == (by_user[user]["submitted"], by_user[user]["skipped"])
        records = wait_for(lambda: (r := ledger.reliabilities(project, list(by_user)))
                           and all(r[u].gold_n == by_user[u]["submitted"] for u in by_user) and r,
                           timeout=60, what="every answer scored against gold")
        bot = next(u for u, p in by_user.items() if p["kind"] == "bot")
        assert records[bot].gold_accuracy == 0.0  # the bot's "1" is never the gold "0"
        assert all(records[bot].mean < records[u].mean for u in by_user if u != bot)


class ProjectOnly:
    """The two admin reads :meth:`Simulation.prepare` makes, from memory (a unit-test stand-in)."""

    url = "http://fake"

    def __init__(self, tasks: list[dict]) -> None:
        self._tasks = tasks

    def project(self, project: int) -> dict:
        return {"id": project, "label_config": RTE_CONFIG}

    def tasks(self, project: int) -> list[dict]:
        return self._tasks


def test_the_truth_is_the_gold_then_the_crowd_sets_expert_answer_then_one_latent_draw_per_task():
    from crowdgate.simulate import Simulation

    tasks = [{"id": 1, "data": {"item": "25"}, "meta": {"gold": "1"}},
             {"id": 2, "data": {"item": "35"}, "meta": {"gold": [
                 {"from_name": "entailment", "to_name": "text", "type": "choices", "value": {"choices": ["0"]}}]}},
             {"id": 3, "data": {"item": "39"}, "meta": {}},
             {"id": 4, "data": {"text": "no item"}, "meta": {"item": "48"}}]
    sim = Simulation(ProjectOnly(tasks), 7, [], crowd="test", expert={"39": "0", "48": "1"})
    sim.prepare()
    assert sim.options == {"entailment": ("1", "0")}
    assert [sim.truth[t]["entailment"] for t in (1, 2, 3, 4)] == ["1", "0", "0", "1"]
    assert sim.items == {1: "25", 2: "35", 3: "39", 4: "48"}
    latent = Simulation(ProjectOnly([{"id": i, "data": {}} for i in range(200)]), 7, [], crowd="test", seed=5)
    latent.prepare()
    again = Simulation(ProjectOnly([{"id": i, "data": {}} for i in range(200)]), 7, [], crowd="test", seed=5)
    again.prepare()
    assert latent.truth == again.truth
    assert Counter(t["entailment"] for t in latent.truth.values())["1"] == pytest.approx(100, abs=25)


def test_a_config_without_choices_cannot_be_simulated():
    from crowdgate.simulate import Simulation, SimulationSetupError

    class NoChoices(ProjectOnly):
        def project(self, project: int) -> dict:
            return {"label_config": '<View><Text name="t" value="$t"/><TextArea name="a" toName="t"/></View>'}

    with pytest.raises(SimulationSetupError, match="no Choices control"):
        Simulation(NoChoices([]), 7, [], crowd="test").prepare()


def test_gold_kept_by_crowdgate_comes_first_and_the_report_says_where_each_truth_came_from():
    from crowdgate.simulate import Simulation

    tasks = [{"id": 1, "data": {}, "meta": {"gold": "1"}}, {"id": 2, "data": {}}, {"id": 3, "data": {}}]
    kept = {1: [{"from_name": "entailment", "type": "choices", "value": {"choices": ["0"]}}], 2: "1"}
    sim = Simulation(ProjectOnly(tasks), 7, [], crowd="test", gold_source=lambda project, xml: kept)
    sim.prepare()
    assert [sim.truth[t]["entailment"] for t in (1, 2)] == ["0", "1"]
    assert sim.truth_sources == Counter({"gold": 2, "latent": 1})


class FakeQueue:
    """Label Studio's queue and annotation endpoints for the session loop, from memory (a unit-test stand-in):
    ``tasks`` served in order, each once per user; ``fail_posts`` makes every POST answer that status."""

    def __init__(self, tasks: int, fail_posts: int | None = None, fail_next: int | None = None) -> None:
        self.url, self.api_key, self.timeout = "http://fake", "admin", 30.0
        self.tasks_left = {i: 3 for i in range(1, tasks + 1)}
        self.fail_posts, self.fail_next = fail_posts, fail_next
        self.posted: list[tuple[int, int, bool]] = []
        self.lock = threading.Lock()
        self.ids: dict[str, int] = {}
        self.user = None

    # admin side
    def project(self, project):
        return {"label_config": RTE_CONFIG}

    def tasks(self, project):
        return [{"id": t, "data": {}} for t in self.tasks_left]

    def invite_annotator(self, email, password):
        from core.labelstudio import Annotator

        with self.lock:
            self.ids.setdefault(email, len(self.ids) + 1)
        return Annotator(id=self.ids[email], email=email, token=email)

    def as_user(self, token):
        me = type(self).__new__(type(self))
        me.__dict__ = self.__dict__.copy()
        me.user = self.ids[token]
        me.done = set()
        me.held = None
        me.shared = self
        return me

    # annotator side
    def assigned_view(self, project, email):
        return None

    def next_task(self, project, view=None):
        from core.labelstudio import LabelStudioError

        if self.fail_next is not None:
            raise LabelStudioError("GET", "http://fake/next", self.fail_next, "down")
        with self.shared.lock:
            if self.held is not None:  # served again until they answer, as Label Studio's task lock does
                return {"id": self.held}
            for task, left in self.shared.tasks_left.items():
                if left and task not in self.done:
                    # the lock counts toward the overlap: two annotators never race for a task's last slot
                    self.shared.tasks_left[task] -= 1
                    self.held = task
                    return {"id": task}
        return None

    def create_annotation(self, task, result, **extra):
        from core.labelstudio import LabelStudioError

        if self.fail_posts is not None:
            raise LabelStudioError("POST", "http://fake/annotations", self.fail_posts, "bad result")
        with self.shared.lock:
            self.shared.posted.append((task, self.user, bool(extra.get("was_cancelled"))))
            self.held = None
        self.done.add(task)
        return {"id": len(self.shared.posted), "completed_by": self.user}


def fake_run(queue: FakeQueue, mix: str = "diligent=2,bot=1", **options):
    from crowdgate.simulate import Simulation, synthetic_annotators

    return Simulation(queue, 1, synthetic_annotators(parse_mix(mix)), crowd=mix, rate=None, **options).run()


def test_the_limit_caps_all_submissions_across_annotators():
    queue = FakeQueue(tasks=10)
    report = fake_run(queue, limit=7)
    assert report.submitted + report.skipped == len(queue.posted) == 7
    assert {a.stopped for a in report.annotators} <= {"limit", "queue empty"}


def test_a_4xx_on_every_submission_is_counted_and_stops_each_annotator_after_three_in_a_row():
    started = time.monotonic()
    report = fake_run(FakeQueue(tasks=5, fail_posts=400))
    assert time.monotonic() - started < 5
    assert report.errors == {"http 400": 9} and report.submitted == 0
    assert all(a.stopped == "errors" and a.errors == 3 and "bad result" in a.last_error for a in report.annotators)


def test_label_studio_going_away_mid_run_is_counted_as_connection_errors_not_a_hang():
    started = time.monotonic()
    report = fake_run(FakeQueue(tasks=5, fail_next=0), mix="sloppy=2")
    assert time.monotonic() - started < 10
    assert report.errors == {"connection": 6}
    assert all(a.stopped == "errors" for a in report.annotators)


def test_the_report_counts_what_was_posted_per_annotator():
    queue = FakeQueue(tasks=6)
    report = fake_run(queue, mix="diligent=1,sloppy=1,colluding_pair=1")
    per_user = Counter((user, skipped) for _task, user, skipped in queue.posted)
    for a in report.annotators:
        assert (a.submitted, a.skipped) == (per_user[(a.user, False)], per_user[(a.user, True)])
        assert a.served == a.submitted + a.skipped
    assert len(queue.posted) == 6 * 3  # every task filled to its overlap of 3


class HeldFirst(FakeQueue):
    """A queue whose only task is first held by someone else's lock: the first ``/next/`` serves nothing."""

    def __init__(self) -> None:
        super().__init__(tasks=1)
        self.empty_answers = 1

    def tasks(self, project):
        return [{"id": 1, "data": {"item": "25"}}]

    def replace_task_data(self, task, data):  # the replay's offer of the task to its workers
        pass

    def offer_view(self, project, email, field):
        return None

    def next_task(self, project, view=None):
        with self.shared.lock:
            if self.shared.empty_answers:
                self.shared.empty_answers -= 1
                return None
        return super().next_task(project, view)


def test_a_replayed_worker_asks_again_when_their_task_is_held_by_another_lock(monkeypatch):
    import crowdgate.simulate as simulate
    from crowdgate.simulate import SimulatedAnnotator, Simulation

    monkeypatch.setattr(simulate, "EMPTY_QUEUE_WAIT_S", 0.01, raising=False)
    worker = SimulatedAnnotator("W1", "w1@replay.test", ReplayWorker("W1", {"25": "0"}, "entailment", median_s=1.0),
                                view_field="crowdgate_replay")
    queue = HeldFirst()
    report = Simulation(queue, 1, [worker], crowd="replay", rate=None).run()
    assert queue.posted == [(1, 1, False)]  # the label was given once the lock let go
    assert report.unserved == 0 and report.annotators[0].stopped == "queue empty"
