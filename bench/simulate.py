"""Benchmark ``crowdgate simulate`` against a real Label Studio: annotations per second of annotators who log in
and take their tasks from ``/next/``, beside the demo's shortcut measured in the same run.

Run from the repository root::

    python bench/simulate.py [--tasks 30] [--overlap 3] [--mix diligent=3,sloppy=1,bot=1] [--concurrency 1,4]

Starts a headless Label Studio 1.23.2 (``scripts/labelstudio.py``), and for each configuration makes a fresh RTE
project of ``--tasks`` items from the shipped crowd set with ``maximum_annotations=--overlap``. Baseline: the
admin key creates the same ``tasks x overlap`` annotations on behalf of as many users (``completed_by``, users
made with ``POST /api/users/``), one call after another, as ``scripts/demo.py`` does. Then
:class:`crowdgate.simulate.Simulation` with the mix, no rate limit, at each ``--concurrency`` (calls in flight).
One JSON line per run: ``{"path", "concurrency", "annotations", "seconds", "annotations_per_s", "login_s_median",
"errors"}``; ``seconds`` of a simulation includes its sign-ups.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.labelstudio import LabelStudioClient
from crowdgate.crowd_profiles import parse_mix
from crowdgate.replay_crowd import crowd_folders
from crowdgate.simulate import Simulation, synthetic_annotators
from ml_backend.labeling import choice_region
from scripts.labelstudio import LabelStudioServer

CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Text name="hypothesis" value="$hypothesis"/>
  <Choices name="entailment" toName="text" choice="single" required="true">
    <Choice value="Entailment" alias="1"/>
    <Choice value="No entailment" alias="0"/>
  </Choices>
</View>"""


def rte_tasks(count: int) -> list[dict]:
    path = crowd_folders()[0] / "rte.items.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line][:count]
    return [{"data": {"text": r["text"], "hypothesis": r["hypothesis"], "item": r["item"]}} for r in rows]


def baseline(admin: LabelStudioClient, tasks: list[dict], overlap: int, run: int) -> dict:
    project = admin.create_project(f"bench simulate baseline {run}", CONFIG, maximum_annotations=overlap)
    ids = admin.import_tasks(project, tasks)
    organization = int(admin.whoami()["active_organization"])
    users = [admin.create_user(f"baseline-{run}-{i}@bench.test", organization=organization) for i in range(overlap)]
    region = [choice_region(CONFIG, "entailment", ["1"])]
    started = time.monotonic()
    for task in ids:
        for user in users:
            admin.create_annotation(task, region, completed_by=user, lead_time=5.0)
    seconds = time.monotonic() - started
    made = len(ids) * len(users)
    return {"path": "admin on behalf (demo's shortcut)", "concurrency": 1, "annotations": made,
            "seconds": round(seconds, 2), "annotations_per_s": round(made / seconds, 2), "login_s_median": None,
            "errors": 0}


def simulated(admin: LabelStudioClient, tasks: list[dict], overlap: int, mix: str, concurrency: int,
              run: int) -> dict:
    project = admin.create_project(f"bench simulate {run}", CONFIG, maximum_annotations=overlap)
    admin.import_tasks(project, tasks)
    people = synthetic_annotators(parse_mix(mix), domain=f"bench{run}.test")
    sim = Simulation(admin, project, people, crowd=mix, rate=None, concurrency=concurrency, seed=run)
    report = sim.run()
    made = report.submitted + report.skipped
    logins = [a.login_s for a in report.annotators if a.user is not None]
    return {"path": "crowdgate simulate (log in, /next/, submit as themselves)", "concurrency": concurrency,
            "annotations": made, "seconds": round(report.elapsed_s, 2),
            "annotations_per_s": round(made / report.elapsed_s, 2),
            "login_s_median": round(statistics.median(logins), 2) if logins else None,
            "errors": report.error_count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--mix", default="diligent=3,sloppy=1,bot=1")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated calls in flight to try")
    args = parser.parse_args(argv)
    tasks = rte_tasks(args.tasks)
    with LabelStudioServer() as ls:
        admin = LabelStudioClient(ls.url, ls.token)
        print(json.dumps(baseline(admin, tasks, args.overlap, 0)), flush=True)
        for run, concurrency in enumerate((int(c) for c in args.concurrency.split(",")), start=1):
            print(json.dumps(simulated(admin, tasks, args.overlap, args.mix, concurrency, run)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
