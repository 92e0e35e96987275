"""Cost per accepted label (crowdgate/report/cost.py): the model on hand-computed examples, the policy's cost:
section and its errors, and ``crowdgate report --payroll`` on a private Redis."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from crowdgate.report.cli import report
from crowdgate.report.cost import AnnotatorWork, CostModel, QaCounts, accepted, qa_counts
from crowdgate.report.files import PAYROLL_COLUMNS
from routing.policy import Cost, PolicyError, load_policy, parse_policy
from routing.state import RoutingState
from tests.test_dashboard import PREFIX, PROJECT, seed

POLICY = """
version: 1
qualification: null
tiers:
  - {name: tier1, wage: 0.05}
  - {name: tier2, wage: 0.08}
cost: {fee_share: 0.1, fee_per_label: 0.01, baseline_overlap: 5, currency: EUR}
"""


# -- the model --------------------------------------------------------------------------------------------------


def test_per_label_wages_fee_overhead_and_baseline_by_hand():
    policy = parse_policy(POLICY)
    work = [AnnotatorWork(1, "tier1", 100, 3600.0, "a@x.org"), AnnotatorWork(2, "tier2", 50, 7200.0)]
    counts = QaCounts(tasks=60, accepted=50, labels=150, gold_labels=10, overlap_labels=80, escalation_labels=5,
                      review_labels=5)
    model = CostModel(policy).fit(work, counts)
    one, two = model.annotators_
    # 100 x 0.05 = 5.00 wage; fee 10 % of it (0.50) + 100 x 0.01 (1.00)
    assert (one.wage, one.fee, one.total, one.paid_hours) == pytest.approx((5.0, 1.5, 6.5, 1.0))
    assert (two.wage, two.fee, two.total, two.paid_hours) == pytest.approx((4.0, 0.9, 4.9, 2.0))
    assert one.email == "a@x.org" and two.email is None
    assert model.total_ == pytest.approx(11.4) and model.per_label_ == pytest.approx(11.4 / 150)
    assert model.per_accepted_ == pytest.approx(11.4 / 50)
    assert model.overhead_ == pytest.approx({"gold": 10 * 0.076, "overlap": 80 * 0.076, "escalation": 5 * 0.076,
                                             "review": 5 * 0.076})
    # baseline: 50 accepted tasks x 5 labels + the same 10 gold labels, at tier1's 0.05 + 0.005 + 0.01
    assert model.baseline_labels_ == 260
    assert model.baseline_total_ == pytest.approx(260 * 0.065)
    assert model.baseline_per_accepted_ == pytest.approx(260 * 0.065 / 50)
    assert model.saved_ == pytest.approx(260 * 0.065 - 11.4)
    assert model.unpriced_ == []


def test_per_hour_wages_and_the_baseline_at_the_mean_lead_time():
    policy = parse_policy(POLICY.replace("cost: {", "cost: {wage_per: hour, ").replace(" baseline_overlap: 5,", ""))
    assert policy.cost.baseline_overlap is None  # falls back to overlap.max (5 by default)
    work = [AnnotatorWork(1, "tier1", 100, 1800.0), AnnotatorWork(2, "tier2", 20, 5400.0)]
    model = CostModel(policy).fit(work, QaCounts(tasks=40, accepted=30, labels=120))
    one, two = model.annotators_
    assert (one.wage, one.fee) == pytest.approx((0.025, 0.0025 + 1.0))  # half an hour at 0.05 an hour
    assert (two.wage, two.fee) == pytest.approx((0.12, 0.012 + 0.2))  # 1.5 h at 0.08
    # mean lead time 7200 s / 120 labels = 60 s: a baseline label costs 0.05 / 60 + 10 % + 0.01
    per_label = 0.05 / 60
    assert model.baseline_overlap_ == 5 and model.baseline_labels_ == 150
    assert model.baseline_total_ == pytest.approx(150 * (per_label * 1.1 + 0.01))


def test_an_unknown_tier_is_paid_nothing_and_listed_and_no_accepted_task_gives_none():
    model = CostModel(parse_policy(POLICY)).fit([AnnotatorWork(9, "gone", 10, 0.0)], QaCounts(3, 0, 10))
    assert model.unpriced_ == [9] and model.annotators_[0].wage == 0.0
    assert model.annotators_[0].fee == pytest.approx(0.1)  # the per-label fee is still owed
    assert model.per_accepted_ is None and model.baseline_per_accepted_ is None
    assert json.dumps(model.summary(), allow_nan=False)


def test_accepted_tasks_and_the_overlap_count():
    assert accepted("final", "A") and accepted("consensus", "A")
    assert not accepted("needs more", "A") and not accepted("escalated", "A") and not accepted("final", None)
    counts = qa_counts([(3, "final", "A"), (1, "consensus", "B"), (4, "escalated", None), (0, "needs more", None)],
                       labels=8, gold_labels=2, escalation_labels=1, review_labels=1)
    # labels beyond the first: 2 + 0 + 3 + 0 = 5, less the escalation and review labels
    assert counts == QaCounts(tasks=4, accepted=2, labels=8, gold_labels=2, overlap_labels=3, escalation_labels=1,
                              review_labels=1)


# -- the policy's cost: section -------------------------------------------------------------------------------


def test_the_cost_section_defaults_and_every_shipped_policy_parses():
    assert parse_policy(None).cost == Cost()
    assert load_policy("label_configs/default.policy.yaml").cost == Cost()
    assert parse_policy(POLICY).cost == Cost(fee_share=0.1, fee_per_label=0.01, baseline_overlap=5, currency="EUR")


@pytest.mark.parametrize(("section", "message"), [
    ({"wage_per": "day"}, "cost.wage_per: must be one of ['label', 'hour'], got 'day'"),
    ({"fee_share": -0.1}, "cost.fee_share: must be a number in [0.0, 10.0], got -0.1"),
    ({"fee_per_label": "1"}, "cost.fee_per_label: must be a number"),
    ({"baseline_overlap": 0}, "cost.baseline_overlap: must be an integer >= 1, got 0"),
    ({"currency": ""}, "cost.currency: must be a non-empty string"),
    ({"fees": 1}, "cost.fees: unknown key"),
    ("cheap", "cost: must be a mapping"),
])
def test_cost_errors_name_the_key(section, message):
    with pytest.raises(PolicyError) as info:
        parse_policy({"cost": section}, origin="p.yaml")
    assert "invalid policy p.yaml" in str(info.value) and any(e.startswith(message) for e in info.value.errors)


# -- the payroll CSV and the report ------------------------------------------------------------------------------


@pytest.fixture
def env(redis_service, redis_conn) -> dict[str, str]:
    seed(redis_conn)  # 5 annotators x 12 tasks, lead time 2 + annotator s, annotator 4 skipped one
    state = RoutingState(redis_conn, PREFIX)
    state.set_policy(PROJECT, POLICY, "test")
    state.set_tier(PROJECT, 3, "tier2")
    state.cache_users({1: "ann@example.org"})
    return {"REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX}


def _rows(path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == PAYROLL_COLUMNS
        return list(reader)


def test_payroll_csv_columns_and_totals(env, tmp_path):
    path = tmp_path / "pay" / "payroll.csv"
    result = CliRunner().invoke(report, [str(PROJECT), "--payroll", str(path), "--since", "2026-11-22",
                                         "--until", "2026-11-23"], env=env)
    assert result.exit_code == 0, result.output
    rows = {int(r["annotator"]): r for r in _rows(path)}
    assert sorted(rows) == [1, 2, 3, 4, 5]
    one, three, four = rows[1], rows[3], rows[4]
    assert (one["email"], one["tier"], one["labels"], one["currency"]) == ("ann@example.org", "tier1", "12", "EUR")
    assert one["period_start"] == "2026-11-22T00:00:00Z" and one["period_end"] == "2026-11-23T00:00:00Z"
    # 12 labels x 0.05 = 0.60; fee 0.06 + 0.12; 12 labels at 3 s lead time each = 0.01 h
    assert [float(one[c]) for c in ("wage", "fee", "total")] == pytest.approx([0.6, 0.18, 0.78])
    assert float(one["paid_hours"]) == pytest.approx(36 / 3600, abs=1e-4)
    assert three["tier"] == "tier2" and float(three["total"]) == pytest.approx(0.96 * 1.1 + 0.12)
    assert four["labels"] == "11" and float(four["total"]) == pytest.approx(0.55 * 1.1 + 0.11)  # the skip is unpaid
    total = sum(float(r["total"]) for r in rows.values())
    assert total == pytest.approx(3 * 0.78 + 1.176 + 0.715)  # annotators 1, 2, 5; 3 in tier2; 4
    assert f"payroll: {path} ({total:.4f} EUR for 59 labels)" in result.output


def test_the_period_selects_by_submission_time(env, tmp_path):
    runner = CliRunner()
    before = runner.invoke(report, [str(PROJECT), "--payroll", str(tmp_path / "a.csv"), "--until",
                                    "2026-11-22T04:17:11"], env=env)
    assert before.exit_code == 0 and _rows(tmp_path / "a.csv") == []
    after = runner.invoke(report, [str(PROJECT), "--payroll", str(tmp_path / "b.csv"), "--since",
                                   "2026-11-22T04:17:12"], env=env)
    assert after.exit_code == 0 and len(_rows(tmp_path / "b.csv")) == 5
    alone = runner.invoke(report, [str(PROJECT), "--since", "2026-11-22"], env=env)
    assert alone.exit_code == 2 and "give --payroll PATH" in alone.output
    reversed_ = runner.invoke(report, [str(PROJECT), "--payroll", str(tmp_path / "c.csv"), "--since", "2026-11-23",
                                       "--until", "2026-11-22"], env=env)
    assert reversed_.exit_code == 2 and "is after --until" in reversed_.output


def test_the_report_shows_the_cost_figures(env, tmp_path):
    runner = CliRunner()
    html = tmp_path / "r.html"
    table = runner.invoke(report, [str(PROJECT), "--html", str(html)], env=env)
    assert table.exit_code == 0, table.output
    assert "per accepted label" in table.output and "fixed overlap 5" in table.output
    data = json.loads(runner.invoke(report, [str(PROJECT), "--json"], env=env).stdout)
    cost, tasks = data["cost"], data["tasks"]
    n_accepted = sum(1 for t in tasks if accepted(t["status"], t["consensus"]))
    labels = 59
    expected_total = (12 + 12 + 11 + 12) * (0.05 * 1.1 + 0.01) + 12 * (0.08 * 1.1 + 0.01)  # tier1, tier2
    assert cost["labels"] == labels and cost["total"] == pytest.approx(expected_total)
    assert sum(a["cost"] for a in data["annotators"]) == pytest.approx(expected_total)
    assert n_accepted > 0 and cost["per_accepted"] == pytest.approx(expected_total / n_accepted)
    gold = sum(a["gold_n"] for a in data["annotators"])
    assert cost["baseline_labels"] == 5 * n_accepted + gold
    assert cost["baseline_total"] == pytest.approx(cost["baseline_labels"] * (0.05 * 1.1 + 0.01))
    assert cost["saved"] == pytest.approx(cost["baseline_total"] - expected_total)
    assert cost["overhead"]["overlap"] == pytest.approx(sum(max(0, t["labels"] - 1) for t in tasks)
                                                        * expected_total / labels)
    assert data["summary"]["cost_per_accepted"] == cost["per_accepted"]
    page = html.read_text(encoding="utf-8")
    assert f'id="cost-per-accepted">{cost["per_accepted"]:.4f}<' in page
    assert f'id="baseline-per-accepted">{cost["baseline_per_accepted"]:.4f}<' in page
    assert page.count('<td class="cost">') == 5 and 'id="cost-overhead"' in page


def test_the_dashboard_shows_the_cost_figures(env, redis_service, monkeypatch):
    from crowdgate.web import create_app
    from tests.state_isolation import use_settings
    from tests.test_dashboard import SECRET, TOKEN

    settings = use_settings(monkeypatch, redis_url=redis_service.url, key_prefix=PREFIX, admin_token=TOKEN,
                            webhook_secret=SECRET, dashboard_cache_s=0.0)
    client = create_app(settings).test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    cost = client.get(f"/admin/api/projects/{PROJECT}/report", headers=headers).get_json()["cost"]
    index = client.get("/dashboard/", headers=headers).get_data(as_text=True)
    assert f'<td class="cost">{cost["per_accepted"]:.4f}</td>' in index
    page = client.get(f"/dashboard/{PROJECT}", headers=headers).get_data(as_text=True)
    assert f'id="cost-per-accepted">{cost["per_accepted"]:.4f}<' in page
    assert f'id="cost-saved">{cost["saved"]:.4f}<' in page and page.count('<td class="cost">') == 5
