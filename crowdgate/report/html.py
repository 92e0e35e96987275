"""The HTML of the report and of the live dashboard: one set of Jinja templates, inline CSS and inline SVG.

    write_html(report, path)                    # the self-contained report file (opens with no network)
    render("project.html", report=..., ...)     # what the dashboard serves

The templates live here as strings (no package data to lose on install); autoescaping is on, and only the SVG the
chart functions built (:mod:`crowdgate.report.charts`, which escape their text) is marked safe.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from jinja2 import DictLoader, Environment
from markupsafe import Markup

from crowdgate.report import charts
from crowdgate.report.data import ProjectReport

__all__ = ["TASKS_SHOWN", "charts_of", "render", "write_html"]

TASKS_SHOWN = 200  # the tasks table shows the most doubtful ones; the CSV and JSON files hold all

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#223;background:#f6f7fa}
header{background:#223;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header a{color:#cde}main{padding:16px 20px}
table{border-collapse:collapse;background:#fff;margin:8px 0 20px;font-size:13px}
th,td{border:1px solid #dde;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#eef;position:sticky;top:0}td.l,th.l{text-align:left}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde;padding:8px 14px}
.card b{display:block;font-size:20px}.charts{display:flex;gap:12px;flex-wrap:wrap}
.chart{background:#fff;border:1px solid #dde}.flag{color:#b22}.msg{background:#efe;border:1px solid #9c9;padding:6px}
.err{background:#fee;border:1px solid #c99;padding:6px}form.inline{display:inline;margin:0}
button{font-size:12px}small{color:#667}
"""

_TEMPLATES = {
    "base.html": """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{{ title }} · crowdgate</title><style>""" + _CSS + """</style></head><body>
<header><b>crowdgate</b>{% if live %}<a href="{{ base }}/">projects</a>
<form class="inline" method="post" action="{{ base }}/logout"><input type="hidden" name="csrf" value="{{ csrf }}">
<button>log out {{ who }}</button></form>{% endif %}<span>{{ title }}</span></header>
<main>{% if message %}<p class="msg" id="message">{{ message }}</p>{% endif %}
{% if error %}<p class="err" id="error">{{ error }}</p>{% endif %}{% block main %}{% endblock %}</main></body>
</html>""",

    "login.html": """{% extends "base.html" %}{% block main %}
<form method="post" action="{{ base }}/login" id="login"><p><label>Admin token
<input type="password" name="token" autocomplete="current-password" autofocus></label></p>
<p><label>Your name (for the audit log) <input name="who" value="admin"></label></p>
<input type="hidden" name="next" value="{{ next }}"><p><button type="submit">Log in</button></p></form>
{% endblock %}""",

    "index.html": """{% extends "base.html" %}{% block main %}
<table id="projects"><tr><th class="l">project</th><th>annotators</th><th>submissions</th><th>skipped</th>
<th>tasks</th><th>agreement</th><th>flagged</th><th>paused</th><th>escalated now</th><th>escalations</th>
<th>cost per accepted label</th></tr>
{% for s in summaries %}<tr class="project"><td class="l"><a href="{{ base }}/{{ s.project }}">{{ s.title }}</a>
<small>#{{ s.project }}</small></td><td>{{ s.annotators }}</td><td>{{ s.submissions }}</td><td>{{ s.skipped }}</td>
<td>{{ s.tasks }}</td><td>{{ pct(s.agreement) }}</td><td>{{ s.flagged }}</td><td>{{ s.paused }}</td>
<td>{{ s.escalated_now }}</td><td>{{ s.escalations }}</td><td class="cost">{{ money(s.cost_per_accepted) }}</td></tr>
{% else %}<tr><td colspan="11" class="l">no project has sent crowdgate anything yet</td></tr>{% endfor %}</table>
{% endblock %}""",

    "project.html": """{% extends "base.html" %}{% block main %}
{% set s = report.summary %}
<div class="cards">
<div class="card">submissions<b id="submissions">{{ s.submissions }}</b></div>
<div class="card">skipped<b>{{ s.skipped }}</b></div><div class="card">annotators<b>{{ s.annotators }}</b></div>
<div class="card">tasks<b>{{ s.tasks }}</b></div><div class="card">agreement<b>{{ pct(s.agreement) }}</b></div>
<div class="card">flagged<b>{{ s.flagged }}</b></div><div class="card">paused<b>{{ s.paused }}</b></div>
<div class="card">escalated now<b>{{ s.escalated_now }}</b></div>
<div class="card">escalations<b>{{ s.escalations }}</b></div></div>
{% if report.cost %}{% set c = report.cost %}<h2>Cost <small>({{ c.currency }}, wage per {{ c.wage_per }})</small></h2>
<div class="cards" id="cost">
<div class="card">cost per accepted label<b id="cost-per-accepted">{{ money(c.per_accepted) }}</b></div>
<div class="card">fixed overlap {{ c.baseline_overlap }}, per accepted label
<b id="baseline-per-accepted">{{ money(c.baseline_per_accepted) }}</b></div>
<div class="card">saved by dynamic overlap<b id="cost-saved">{{ money(c.saved) }}</b></div>
<div class="card">total<b id="cost-total">{{ money(c.total) }}</b><small>wage {{ money(c.wage) }} + fee
{{ money(c.fee) }}, {{ c.labels }} labels ({{ c.baseline_labels }} at fixed overlap)</small></div></div>
<table id="cost-overhead"><tr><th class="l">QA overhead</th><th>cost</th><th>share of total</th></tr>
{% for name, value in c.overhead.items() %}<tr><td class="l">{{ name }}</td><td>{{ money(value) }}</td>
<td>{{ pct(value / c.total if c.total else none) }}</td></tr>{% endfor %}</table>
{% if c.unpriced %}<p class="err">no wage for the tier of annotators {{ c.unpriced | join(", ") }} (paid 0)</p>
{% endif %}{% endif %}
<h2>Charts</h2><div class="charts">{% for chart in charts %}{{ chart }}{% endfor %}</div>
<h2>Annotators</h2>
<table id="annotators"><tr><th class="l">annotator</th><th class="l">tier</th><th>submitted</th><th>skipped</th>
<th>agreement with peers</th><th>gold score [90 %]</th><th>reliability [90 %]</th><th>median lead time</th>
<th>total lead time</th><th>cost</th><th class="l">flags</th><th class="l">paused</th><th>last active</th>
{% if live %}<th class="l">actions</th>{% endif %}</tr>
{% for a in report.annotators %}
<tr class="annotator" id="annotator-{{ a.annotator }}" data-annotator="{{ a.annotator }}">
<td class="l">{% if live %}
<a href="{{ base }}/{{ report.project }}?annotator={{ a.annotator }}#audit">{{ a.annotator }}</a>
{% else %}{{ a.annotator }}{% endif %}</td><td class="l tier">{{ a.tier }}</td><td>{{ a.submitted }}</td>
<td>{{ a.skipped }}</td><td>{{ num(a.peer_agreement) }} <small>n={{ a.peer_n }}</small></td>
<td>{% if a.gold_score is not none %}{{ num(a.gold_score) }} <small>[{{ num(a.gold_low) }}, {{ num(a.gold_high) }}]
n={{ a.gold_n }}</small>{% else %}–{% endif %}</td>
<td>{{ num(a.reliability) }} <small>[{{ num(a.reliability_low) }}, {{ num(a.reliability_high) }}]</small></td>
<td>{{ secs(a.median_lead_time_s) }}</td><td>{{ secs(a.total_lead_time_s) }}</td>
<td class="cost">{{ money(a.cost) }}</td>
<td class="l flag">{{ a.flags | join("; ") }}</td><td class="l flag">{{ a.paused or "" }}</td>
<td>{{ when(a.last_active) }}</td>
{% if live %}<td class="l"><form class="inline" method="post" action="{{ base }}/{{ report.project }}/action">
<input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="action" value="set_tier">
<input type="hidden" name="target" value="{{ a.annotator }}"><select name="tier" aria-label="tier">
{% for t in report.tiers %}<option{% if t == a.tier %} selected{% endif %}>{{ t }}</option>{% endfor %}</select>
<button type="submit" class="set-tier">set tier</button></form>
{% if a.flags %}<form class="inline" method="post" action="{{ base }}/{{ report.project }}/action">
<input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="action" value="clear_flag">
<input type="hidden" name="target" value="{{ a.annotator }}"><button class="clear-flag">clear flag</button>
</form>{% endif %}
{% if a.paused %}<form class="inline" method="post" action="{{ base }}/{{ report.project }}/action">
<input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="action" value="unpause">
<input type="hidden" name="target" value="{{ a.annotator }}"><button class="unpause">unpause</button></form>{% endif %}
</td>{% endif %}</tr>{% endfor %}</table>
<h2>Tasks
<small>({{ shown_tasks | length }} of {{ report.tasks | length }}: escalated, then the lowest agreement)</small></h2>
<table id="tasks"><tr><th>task</th><th>labels</th><th>agreement</th><th class="l">consensus</th>
<th class="l">status</th>
<th>escalations</th><th class="l">required tier</th>
<th>difficulty</th>{% if live %}<th class="l">actions</th>{% endif %}</tr>
{% for t in shown_tasks %}<tr class="task" data-task="{{ t.task }}"><td>{% if live %}
<a href="{{ base }}/{{ report.project }}?task={{ t.task }}#audit">{{ t.task }}</a>{% else %}{{ t.task }}{% endif %}</td>
<td>{{ t.labels }}</td><td>{{ num(t.agreement) }}</td><td class="l">{{ t.consensus or "" }}</td>
<td class="l">{{ t.status }}</td><td>{{ t.escalations }}</td><td class="l">{{ t.required_tier or "" }}</td>
<td>{{ num(t.difficulty) }}</td>{% if live %}<td class="l"><form class="inline" method="post"
action="{{ base }}/{{ report.project }}/action"><input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="action" value="rerun_task"><input type="hidden" name="target" value="{{ t.task }}">
<button class="rerun">re-run</button></form></td>{% endif %}</tr>{% endfor %}</table>
{% if audit is not none %}<h2 id="audit">Audit trail of {{ audit_of }}</h2>
<table id="audit-trail"><tr><th class="l">time</th><th class="l">kind</th><th class="l">action</th><th>task</th>
<th class="l">annotators</th><th class="l">reason</th><th class="l">by</th></tr>
{% for e in audit %}<tr class="entry"><td class="l">{{ when(e.ts) }}</td><td class="l">{{ e.kind }}</td>
<td class="l">{{ e.action }}</td><td>{{ e.task if e.task is not none else "" }}</td>
<td class="l">{{ e.annotators | join(", ") }}</td><td class="l">{{ e.reason }}</td><td class="l">{{ e.job }}</td></tr>
{% else %}<tr><td colspan="7" class="l">no entries</td></tr>{% endfor %}</table>{% endif %}
<p><small>read in {{ "%.3f" | format(report.read_seconds) }} s at {{ when(report.generated_at) }}</small></p>
{% endblock %}""",
}


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _secs(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _when(value: float | None) -> str:
    if value is None:
        return "–"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_ENV = Environment(loader=DictLoader(_TEMPLATES), autoescape=True)
_ENV.globals.update(num=_num, pct=_pct, secs=_secs, when=_when, money=_money)


def charts_of(report: ProjectReport) -> list[Markup]:
    """The report's charts: reliability of every annotator with its interval, task agreement, task status."""
    rel = [(f"annotator {a.annotator}", a.reliability, a.reliability_low, a.reliability_high)
           for a in report.annotators]
    agreements = [t.agreement for t in report.tasks if t.agreement is not None and t.labels >= 2]
    statuses = report.summary["statuses"]
    return [Markup(charts.interval_plot(rel, "Reliability by annotator (90 % interval)")),
            Markup(charts.histogram(agreements, "Task agreement (tasks with 2+ labels)")),
            Markup(charts.bars(list(statuses), list(statuses.values()), "Tasks by status"))]


def shown_tasks(report: ProjectReport, limit: int = TASKS_SHOWN) -> list[Any]:
    """Escalated tasks first, then by agreement, lowest first (unscored last)."""
    return sorted(report.tasks, key=lambda t: (t.status != "escalated", t.agreement is None, t.agreement or 0.0,
                                               t.task))[:limit]


def render(name: str, **context: Any) -> str:
    context.setdefault("live", False)
    context.setdefault("title", "crowdgate")
    if "report" in context:
        context.setdefault("charts", charts_of(context["report"]))
        context.setdefault("shown_tasks", shown_tasks(context["report"]))
        context.setdefault("audit", None)
    return _ENV.get_template(name).render(**context)


def write_html(report: ProjectReport, path: Path) -> Path:
    """The self-contained HTML report of one project (inline CSS and SVG, no script, no link out)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render("project.html", report=report, title=f"{report.title} · report"), encoding="utf-8")
    return path
