"""``crowdgate seed``: bad input refused before any write, near-duplicates found, and against the real Label Studio
and a private Redis: a seeded project with its guideline, gold hidden from annotators, accounts that log in, and
a second run that makes no write call."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import requests
from click.testing import CliRunner

from core.config_folder import ConfigFolderError
from core.labelstudio import LabelStudioClient
from crowdgate.duplicates import NearDuplicates, normalise
from crowdgate.seed import SEED_FIELD, SeedPlan, SeedReport, seed, summary_text
from qa_hooks.ledger import Ledger
from routing.state import RoutingState
from scripts.services import start_web
from tests.state_isolation import use_environ

PREFIX = "seedtest"
ROOT_CONFIGS = Path(__file__).resolve().parents[1] / "label_configs"
SECRET = "seed-test-secret"
CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Text name="hypothesis" value="$hypothesis"/>
  <Choices name="entailment" toName="text" choice="single" required="true">
    <Choice value="Entailment"/>
    <Choice value="No entailment"/>
  </Choices>
</View>
"""
GUIDELINE = """<html><head><title>RTE</title></head><body>
<p class="guideline-version">Guideline version 2</p>
<h1>Entailment</h1><p>Choose Entailment only if the text makes the hypothesis definitely true.</p>
</body></html>
"""
POLICY = """version: 1
tiers:
  - name: tier1
  - name: tier2
    promote: {min_gold: 5, min_lower: 0.85}
    demote: {max_upper: 0.75}
qualification: null
gold:
  share: 0.25
overlap:
  min: 2
  max: 4
"""
TEXTS = [
    ("The cat sat on the mat in the kitchen all afternoon.", "A cat was in the kitchen."),
    ("Parliament passed the budget on Tuesday after a long debate.", "The budget passed."),
    ("The river flooded the valley twice in the spring of 1998.", "The valley flooded."),
    ("She bought three apples and a loaf of bread at the market.", "She bought fruit."),
    ("The company reported record profits in its third quarter.", "Profits fell."),
    ("A new bridge opened across the harbour last weekend.", "A bridge opened."),
    ("The orchestra played Mahler's fifth symphony to a full hall.", "The hall was empty."),
    ("Heavy snow closed the mountain pass for two days.", "The pass was closed."),
]
GOLD_TEXTS = [
    ("Water boils at 100 degrees Celsius at sea level.", "Water boils at 100 degrees at sea level.", "Entailment"),
    ("The museum is closed on Mondays.", "The museum is open every day.", "No entailment"),
    ("Tom is taller than Ann, and Ann is taller than Bob.", "Tom is taller than Bob.", "Entailment"),
]


def answer(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "entailment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_folder(root: Path) -> Path:
    folder = root / "rte_test"
    folder.mkdir(parents=True)
    (folder / "config.xml").write_text(CONFIG)
    (folder / "guideline.html").write_text(GUIDELINE)
    (folder / "policy.yaml").write_text(POLICY)
    write_jsonl(folder / "tasks.jsonl", [{"data": {"text": t, "hypothesis": h}} for t, h in TEXTS[:2]])
    write_jsonl(folder / "gold.jsonl", [{"data": {"text": t, "hypothesis": h}, "answer": answer(a)}
                                        for t, h, a in GOLD_TEXTS])
    return folder


def make_tasks(root: Path) -> Path:
    rows = [{"text": t, "hypothesis": h} for t, h in TEXTS]
    rows.append({"text": TEXTS[0][0].upper().replace(".", "!"), "hypothesis": TEXTS[0][1]})  # line 9: exact dup
    rows.append({"text": TEXTS[1][0].replace("Tuesday", "Tuesday evening"), "hypothesis": TEXTS[1][1]})  # near
    return write_jsonl(root / "tasks.jsonl", rows)


def make_people(root: Path, rows: list[str] | None = None) -> Path:
    path = root / "people.csv"
    path.write_text("\n".join(["email,name,tier,cohort", *(rows or [
        "Ada@crowd.example,Ada Lovelace,tier2,cohort-a",
        "bob@crowd.example,Bob Stone,tier1,cohort-b",
    ])]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    return {"folder": make_folder(tmp_path), "tasks": make_tasks(tmp_path), "people": make_people(tmp_path)}


class MethodCounter:
    """Counts the HTTP methods every requests session and httpx client of this process sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.methods: Counter[str] = Counter()
        self.writes: list[str] = []
        original_request, original_send = requests.Session.request, httpx.Client.send
        counter = self

        def request(session: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            counter.seen(method, url)
            return original_request(session, method, url, *args, **kwargs)

        def send(client: httpx.Client, req: httpx.Request, *args: Any, **kwargs: Any) -> Any:
            counter.seen(req.method, str(req.url))
            return original_send(client, req, *args, **kwargs)

        monkeypatch.setattr(requests.Session, "request", request)
        monkeypatch.setattr(httpx.Client, "send", send)

    def seen(self, method: str, url: str) -> None:
        self.methods[method.upper()] += 1
        if method.upper() not in ("GET", "HEAD", "OPTIONS"):
            self.writes.append(f"{method.upper()} {url}")


# -- input checks and duplicates, no network ---------------------------------------------------------------------


def test_normalise_and_near_duplicates():
    assert normalise("  The CAT, sat!\n on the mat. ") == "the cat sat on the mat"
    texts = ["The cat sat on the mat.", "the cat sat on the MAT", "A dog barked at the mailman this morning.",
             "A dog barked at the mailman this morning, twice.", "Something else entirely, nothing alike."]
    groups = NearDuplicates(threshold=0.7).fit(texts).groups_
    assert [(g.keep, g.others, g.kind) for g in groups] == [(0, (1,), "exact"), (2, (3,), "near")]
    assert 0.7 <= groups[1].similarity < 1.0
    assert NearDuplicates(threshold=0.99).fit(texts).groups_[0].kind == "exact"
    # field by field: one long premise with two different hypotheses is two tasks, not a near-duplicate
    premise = "The orchestra played Mahler's fifth symphony to a full hall on a cold night in the old city."
    pairs = [(premise, "The hall was full."), (premise, "Nobody came."), (premise + " ", "the hall was FULL")]
    assert [(g.keep, g.others) for g in NearDuplicates().fit(pairs).groups_] == [(0, (2,))]
    assert NearDuplicates().fit(["\n".join(p) for p in pairs[:2]]).groups_  # joined, the premise would dominate
    assert len(NearDuplicates(threshold=0.99).fit(texts).groups_) == 1


def test_prefix_filtering_misses_no_pair_a_full_comparison_finds():
    import itertools
    import random

    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "the", "of"]
    base = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(60)]
    texts = base + [" ".join([*t.split()[:-1], rng.choice(words)]) for t in base[:30]]  # one word changed
    finder = NearDuplicates(threshold=0.6)
    shingles = [set(finder._shingles(normalise(t))) for t in texts]
    full = {(a, b) for a, b in itertools.combinations(range(len(texts)), 2)
            if len(shingles[a] & shingles[b]) / len(shingles[a] | shingles[b]) >= 0.6}
    assert full  # the data has near pairs to find
    prefiltered = {(a, b) for a, b, _ in finder._near_pairs([(normalise(t),) for t in texts])}
    assert prefiltered == full


def test_plan_reports_mixes_gold_and_drops_or_merges(inputs: dict[str, Path]):
    plan = SeedPlan.build(inputs["folder"], inputs["tasks"], people_path=inputs["people"])
    assert [(d["kind"], d["keep_line"], d["duplicate_lines"]) for d in plan.duplicate_lines] == \
        [("exact", 1, [9]), ("near", 2, [10])]
    gold = [t for t in plan.tasks if t["meta"][SEED_FIELD] in plan.gold_answers]
    # share 0.25 of 10 tasks + gold: 3 gold items (all the folder has), spread through the import
    assert plan.gold_mixed == 3 and len(gold) == 3 and len(plan.tasks) == 13
    # a gold task carries its answer nowhere Label Studio would send it: neither data nor meta
    assert all("Entailment" not in json.dumps(t) and set(t["meta"]) == {SEED_FIELD} for t in plan.tasks)
    assert sorted(json.dumps(a) for a in plan.gold_answers.values()) == \
        sorted(json.dumps(answer(a)) for _, _, a in GOLD_TEXTS)
    positions = [i for i, t in enumerate(plan.tasks) if t["meta"][SEED_FIELD] in plan.gold_answers]
    assert positions[0] > 0 and positions[-1] < len(plan.tasks) - 1
    assert [p.email for p in plan.people] == ["ada@crowd.example", "bob@crowd.example"]

    dropped = SeedPlan.build(inputs["folder"], inputs["tasks"], duplicates="drop")
    assert dropped.dropped == 2 and len(dropped.tasks) == 8 + 3  # 8 distinct tasks, round(0.25 * 8 / 0.75) gold
    merged = SeedPlan.build(inputs["folder"], inputs["tasks"], duplicates="merge")
    assert merged.merged == 2
    first = next(t for t in merged.tasks if t["data"]["text"] == TEXTS[0][0])
    assert first["meta"]["crowdgate_merged"][0]["text"].startswith("THE CAT")


def test_summary_names_counts_duplicates_and_new_accounts():
    report = SeedReport(project=7, duplicates=[{"kind": "near", "similarity": 0.85, "keep_line": 2,
                                                "duplicate_lines": [10]}],
                        new_accounts=[{"email": "ada@crowd.example", "id": 4, "password": "pw-1"}])
    report.count("tasks", "created", 9)
    report.count("tasks", "unchanged", 1)
    report.count("webhook", "unchanged")
    text = summary_text(report)
    assert "project 7" in text and "duplicates: 1 in 1 groups; imported anyway" in text
    assert "line 2 ~ lines [10] (near, Jaccard 0.85)" in text
    assert "new account ada@crowd.example (user 4), password pw-1" in text
    tasks_line = next(line for line in text.splitlines() if line.strip().startswith("tasks"))
    assert tasks_line.split() == ["tasks", "created", "9", "updated", "0", "unchanged", "1"]
    assert report.writes == 9


@pytest.mark.parametrize("case, where, problem", [
    ("tasks_json", "tasks.jsonl:3", "JSON"),
    ("tasks_field", "tasks.jsonl:2", "hypothesis"),
    ("config", "config.xml:", "XML"),
    ("policy", "policy.yaml:", "tier"),
    ("duplicate_email", "people.csv:3", "duplicate e-mail"),
    ("unknown_tier", "people.csv:2", "unknown tier"),
    ("people_header", "people.csv:1", "cohort"),
])
def test_bad_input_is_refused_with_file_line_and_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         case: str, where: str, problem: str):
    folder, tasks, people = make_folder(tmp_path), make_tasks(tmp_path), make_people(tmp_path)
    if case == "tasks_json":
        lines = tasks.read_text().splitlines()
        lines[2] = '{"data": {"text": "unterminated'
        tasks.write_text("\n".join(lines) + "\n")
    elif case == "tasks_field":
        lines = tasks.read_text().splitlines()
        lines[1] = json.dumps({"text": "no hypothesis here"})
        tasks.write_text("\n".join(lines) + "\n")
    elif case == "config":
        (folder / "config.xml").write_text(CONFIG.replace("</Choices>", "</Choice>"))
    elif case == "policy":
        (folder / "policy.yaml").write_text(POLICY.replace("name: tier2", "name: tier1"))
    elif case == "duplicate_email":
        make_people(tmp_path, ["ada@crowd.example,Ada,tier1,a", "ADA@crowd.example,Ada again,tier1,a"])
    elif case == "unknown_tier":
        make_people(tmp_path, ["ada@crowd.example,Ada,gold-star,a"])
    elif case == "people_header":
        people.write_text("email,name,tier\nada@crowd.example,Ada,tier1\n")
    with pytest.raises(ConfigFolderError) as caught:
        SeedPlan.build(folder, tasks, people_path=people)
    assert where in str(caught.value) and problem.lower() in str(caught.value).lower()

    # The command says the same and exits 1, having sent nothing at all (it checks before it connects).
    counter = MethodCounter(monkeypatch)
    use_environ(monkeypatch, {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "x",
                              "REDIS_URL": "redis://127.0.0.1:9/0"})
    result = CliRunner().invoke(seed, [str(folder), str(tasks), "--annotators", str(people)])
    assert result.exit_code == 1, result.output
    assert where in result.output and "nothing was written" in result.output
    assert sum(counter.methods.values()) == 0


# -- against the real Label Studio ------------------------------------------------------------------------------


def log_in(url: str, email: str, password: str) -> requests.Session:
    """Log in through Label Studio's form as a browser does; the session is logged in or the test fails."""
    browser = requests.Session()
    browser.get(f"{url}/user/login/", timeout=30)
    reply = browser.post(f"{url}/user/login/", data={"email": email, "password": password,
                                                     "csrfmiddlewaretoken": browser.cookies.get("csrftoken", "")},
                         headers={"Referer": f"{url}/user/login/"}, allow_redirects=False, timeout=30)
    assert reply.status_code == 302, f"{email} cannot log in"
    return browser


def test_seed_real_labelstudio_then_a_second_run_writes_nothing(
        inputs: dict[str, Path], labelstudio, redis_service, log_dir: Path, monkeypatch: pytest.MonkeyPatch):
    connection = redis.Redis.from_url(redis_service.url)
    for key in connection.scan_iter(f"{PREFIX}:*"):
        connection.delete(key)
    env = {"REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX, "LABEL_STUDIO_URL": labelstudio.url,
           "LABEL_STUDIO_API_KEY": labelstudio.token, "CROWDGATE_WEBHOOK_SECRET": SECRET,
           "CROWDGATE_ML_BASIC_AUTH_USER": "ls", "CROWDGATE_ML_BASIC_AUTH_PASSWORD": "ml-pass"}
    settings = use_environ(monkeypatch, env)
    import os

    web = start_web({**os.environ, **env}, log_dir)
    try:
        args = [str(inputs["folder"]), str(inputs["tasks"]), "--annotators", str(inputs["people"]),
                "--project-title", "seed test", "--crowdgate-url", web.url, "--json"]
        first = CliRunner().invoke(seed, args)
        assert first.exit_code == 0, first.output
        report = json.loads(first.output)
        counts = report["counts"]
        assert counts["project"]["created"] == 1 and counts["tasks"]["created"] == 10
        assert counts["gold"]["created"] == 3 and counts["gold_answers"]["created"] == 3
        assert counts["users"]["created"] == 2
        assert counts["ml_backend"]["created"] == 1 and counts["webhook"]["created"] == 1
        assert counts["escalation_projects"]["created"] == 1 and counts["policy"]["created"] == 1
        assert report["duplicates_found"] == 2

        admin = LabelStudioClient(labelstudio.url, labelstudio.token)
        project = report["project"]
        info = admin.project(project)
        assert "definitely true" in info["expert_instruction"] and info["label_config"].strip() == CONFIG.strip()
        tasks = admin.tasks(project)
        assert len(tasks) == 13 and all(set(t["meta"]) == {SEED_FIELD} for t in tasks)
        # the answers are in crowdgate's store, where scoring reads gold
        ledger = Ledger(connection, PREFIX)
        by_text = {t["data"]["text"]: int(t["id"]) for t in tasks}
        assert sorted(ledger.gold_tasks(project)) == sorted(by_text[g[0]] for g in GOLD_TEXTS)
        for text, _, label in GOLD_TEXTS:
            assert ledger.gold(project, by_text[text]) == answer(label)
        backend = admin.ml_backends(project)[0]
        assert backend["auth_method"] == "BASIC_AUTH" and backend["basic_auth_user"] == "ls"
        hook = next(h for h in admin.webhooks(project) if h["url"].endswith("/hooks/labelstudio"))
        assert hook["headers"] == {"X-Crowdgate-Secret": SECRET}

        state = RoutingState(connection, PREFIX)
        assert state.policy_source(project)[0] == POLICY
        ids = {a["email"]: a["id"] for a in report["new_accounts"]}
        assert state.tiers(project) == {ids["ada@crowd.example"]: "tier2", ids["bob@crowd.example"]: "tier1"}
        assert state.cohorts(project) == {ids["ada@crowd.example"]: "cohort-a", ids["bob@crowd.example"]: "cohort-b"}
        tier_project = state.tier_project(project, "tier2")
        assert tier_project == report["escalation_projects"]["tier2"]
        assert admin.project(tier_project)["label_config"].strip() == CONFIG.strip()

        # Each new account logs in with the password it was given, and works its own queue; what /next/ serves
        # it carries no answer in the data the labeling interface shows.
        for account in report["new_accounts"]:
            browser = log_in(labelstudio.url, account["email"], account["password"])
            assert browser.get(f"{labelstudio.url}/api/current-user/whoami", timeout=30).json()["id"] == account["id"]
        ada = next(a for a in report["new_accounts"] if a["email"] == "ada@crowd.example")
        token = log_in(labelstudio.url, ada["email"], ada["password"]).get(
            f"{labelstudio.url}/api/current-user/token", timeout=30).json()["token"]
        as_ada = admin.as_user(token)
        served = as_ada.next_task(project)
        assert served is not None and set(served["data"]) == {"text", "hypothesis"}
        # /next/ hands the annotator the task's meta too (why no answer may live there); and nothing Ada's own
        # key can list about a gold task names its answer
        assert served["meta"] == {SEED_FIELD: served["meta"][SEED_FIELD]}
        for task in as_ada.tasks(project, ids=[by_text[g[0]] for g in GOLD_TEXTS]):
            assert "choices" not in json.dumps({k: task.get(k) for k in ("data", "meta", "annotations")})
        names = {u["email"]: (u["first_name"], u["last_name"]) for u in admin.users()}
        assert names["ada@crowd.example"] == ("Ada", "Lovelace")

        # The second run: nothing to change, so not one write call to Label Studio.
        counter = MethodCounter(monkeypatch)
        second = CliRunner().invoke(seed, args)
        assert second.exit_code == 0, second.output
        assert counter.writes == [], counter.writes
        assert counter.methods["GET"] > 0
        again = json.loads(second.output)
        assert again["project"] == project
        assert all(c["created"] == 0 and c["updated"] == 0 for c in again["counts"].values()), again["counts"]
        assert again["counts"]["tasks"]["unchanged"] == 10 and again["counts"]["users"]["unchanged"] == 2
        assert len(admin.tasks(project)) == 13

        # A changed guideline is one update, and nothing else moves.
        (inputs["folder"] / "guideline.html").write_text(GUIDELINE.replace("definitely", "certainly"))
        counter.writes.clear()
        third = CliRunner().invoke(seed, args)
        assert third.exit_code == 0, third.output
        changed = json.loads(third.output)["counts"]
        assert changed["project"] == {"created": 0, "updated": 1, "unchanged": 0}
        assert changed["escalation_projects"] == {"created": 0, "updated": 1, "unchanged": 0}
        assert [w.split()[0] for w in counter.writes] == ["PATCH", "PATCH"], counter.writes
        assert settings.key_prefix == PREFIX
    finally:
        web.stop()
    shutil.rmtree(inputs["folder"], ignore_errors=True)


def test_every_shipped_config_folder_seeds_into_the_real_labelstudio(labelstudio, redis_service):
    """Each label_configs/<type>/ with its own sample tasks: the project, its tasks and gold, its escalation
    projects; then nothing to do on a second run."""
    from core.config_folder import folder_paths
    from crowdgate.seed import ProjectSeeder

    connection = redis.Redis.from_url(redis_service.url)
    admin = LabelStudioClient(labelstudio.url, labelstudio.token)
    seeder = ProjectSeeder(admin, connection, "seedall", progress=False)
    ledger = Ledger(connection, "seedall")
    folders = folder_paths(ROOT_CONFIGS)
    assert len(folders) >= 10
    for folder in folders:
        plan = SeedPlan.build(folder, folder / "tasks.jsonl", title=f"every folder: {folder.name}")
        assert plan.gold_mixed >= 1, folder.name
        report = seeder.run(plan).as_dict()
        project = report["project"]
        assert report["counts"]["project"]["created"] == 1, folder.name
        tasks = admin.tasks(project)
        assert len(tasks) == len(plan.tasks), folder.name
        assert len(ledger.gold_tasks(project)) == plan.gold_mixed, folder.name
        tiers = plan.policy.tier_names[plan.policy.first_labeling_index + 1:]
        assert sorted(report["escalation_projects"]) == sorted(tiers), folder.name
        again = seeder.run(plan).as_dict()
        assert again["project"] == project
        assert all(c["created"] == c["updated"] == 0 for c in again["counts"].values()), (folder.name, again)


def test_a_crowdgate_url_without_the_webhook_secret_is_refused_before_any_call(
        inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    counter = MethodCounter(monkeypatch)
    use_environ(monkeypatch, {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "x",
                              "REDIS_URL": "redis://127.0.0.1:9/0", "CROWDGATE_WEBHOOK_SECRET": ""})
    result = CliRunner().invoke(seed, [str(inputs["folder"]), str(inputs["tasks"]),
                                       "--crowdgate-url", "http://127.0.0.1:9090"])
    assert result.exit_code == 1 and "CROWDGATE_WEBHOOK_SECRET is not set" in result.output
    assert sum(counter.methods.values()) == 0
