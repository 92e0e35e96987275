"""The demo: crowdgate beside a real Label Studio, fed by a real crowd.

Gets Redis (``REDIS_URL`` if it answers, else a private ``redis-server``), starts Label Studio, crowdgate's web
app (ML backend + webhook receiver) and an RQ worker, seeds an RTE project from the shipped crowd set
(Snow et al. 2008, Apache-2.0 via CrowdTruth) with every fifth item as gold, lets the ML backend pre-label it,
submits the real crowd workers' labels as Label Studio users, and prints what crowdgate made of them: each
annotator's reliability (beside their true accuracy, known from the set's expert answers) and each task's
consensus against the expert answer.

    crowdgate demo                  # keeps everything running until Ctrl-C
    crowdgate demo --exit           # stops once the summary is printed

``crowdgate-demo`` (:func:`main`) is its old name, kept for one release.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import pandas as pd
import redis

from core.console_scripts import run_alias
from core.settings import Settings
from ml_backend.labeling import choice_region
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from scripts.crowd_sets import load_items, load_labels
from scripts.labelstudio import LabelStudioServer
from scripts.seed import Seeder, label_config
from scripts.services import Service, ensure_redis, start_web, start_worker


@dataclass(frozen=True)
class DemoOptions:
    """What the command line chose (see ``crowdgate demo --help``)."""

    tasks: int = 20
    annotators: int = 0
    show: int = 6
    gold_every: int = 5
    ls_port: int | None = None
    keep_data: bool = False
    exit: bool = False


def pick_crowd(tasks: int, annotators: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``tasks`` RTE items and their labels: all of them, or those of the ``annotators`` most active workers."""
    items = load_items("rte").sample(n=tasks, random_state=1)  # the file is sorted by gold: sample across it
    labels = load_labels("rte")
    labels = labels[labels["task"].isin(items.index)]
    if annotators:
        busiest = labels["worker"].value_counts().head(annotators).index
        labels = labels[labels["worker"].isin(busiest)]
    return items, labels


def wait_until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def run(args: DemoOptions, settings: Settings) -> int:
    log_dir = Path(settings.demo_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    secret = settings.webhook_secret or "crowdgate-demo-secret"
    started: list[Service] = []
    ls_server = LabelStudioServer(
        port=args.ls_port,
        data_dir=log_dir / "label-studio-data" if args.keep_data else None,
        password=settings.ls_password or "crowdgate-demo",
    )
    try:
        t0 = time.monotonic()
        redis_service = ensure_redis(log_dir, settings)
        started.append(redis_service)
        print(f"[{time.monotonic() - t0:5.1f}s] Redis at {redis_service.url}"
              f" ({'started' if redis_service.process else 'reused REDIS_URL'})", flush=True)
        ls = ls_server.start()
        print(f"[{time.monotonic() - t0:5.1f}s] Label Studio at {ls.url}", flush=True)
        env = {**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_WEBHOOK_SECRET": secret,
               "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token}
        web = start_web(env, log_dir)
        started.append(web)
        worker = start_worker(env, log_dir)
        started.append(worker)
        print(f"[{time.monotonic() - t0:5.1f}s] crowdgate web app at {web.url}, RQ worker pid {worker.pid}",
              flush=True)

        items, labels = pick_crowd(args.tasks, args.annotators)
        config = label_config("rte")
        seeder = Seeder(ls.url, ls.token)
        project = seeder.create_project(
            "crowdgate demo: RTE", config, maximum_annotations=int(labels.groupby("task").size().max()),
            expert_instruction="Choose Entailment only if the text makes the hypothesis definitely true.",
        )
        # Every fifth item is a gold item: its expert answer goes in meta, which annotators never see.
        gold_items = set(items.index[:: args.gold_every]) if args.gold_every else set()
        task_ids = seeder.import_tasks(
            project,
            [{"data": {"text": row.text, "hypothesis": row.hypothesis},
              "meta": {"rte_item": task, **({"gold": row.gold} if task in gold_items else {})}}
             for task, row in items.iterrows()],
        )
        task_of = dict(zip(items.index, task_ids, strict=True))
        seeder.connect_ml_backend(project, web.url)
        seeder.connect_webhook(project, f"{web.url}/hooks/labelstudio", secret)
        seeder.retrieve_predictions(project)
        print(f"[{time.monotonic() - t0:5.1f}s] project {project}: {len(task_ids)} RTE tasks,"
              f" ML backend and webhook connected", flush=True)

        users = seeder.create_users(f"{w.lower()}@crowd.example" for w in sorted(labels["worker"].unique()))
        for row in labels.itertuples():
            seeder.annotate(task_of[row.task], users[f"{row.worker.lower()}@crowd.example"],
                            [choice_region(config, "entailment", [row.label])])
        # One annotator skips a task they had not labelled, as annotators do.
        done = set(zip(labels["worker"], labels["task"], strict=True))
        worker, item = next((w, t) for t in items.index for w in sorted(labels["worker"].unique())
                            if (w, t) not in done)
        seeder.annotate(task_of[item], users[f"{worker.lower()}@crowd.example"], [], was_cancelled=True)
        expected = len(labels) + 1
        print(f"[{time.monotonic() - t0:5.1f}s] submitted {len(labels)} crowd labels from {len(users)} annotators"
              " and 1 skip", flush=True)

        store = SubmissionStore(redis.Redis.from_url(redis_service.url), settings.key_prefix)
        wait_until(lambda: store.summary(project)["submissions"] >= expected, 60)
        predictions = seeder.predictions(project)
        summary = store.summary(project)
        names = {uid: email for email, uid in users.items()}
        ledger = Ledger(store.redis, store.prefix)
        print()
        print(f"Label Studio: {ls.url}   login: {ls.username} / {ls.password}")
        print(f"Project {project} ({ls.url}/projects/{project}/data): {len(task_ids)} tasks,"
              f" {len(predictions)} crowdgate predictions")
        print(f"crowdgate recorded {summary['submissions']} of {expected} submissions (skips included)"
              f" on {summary['tasks_with_submissions']} tasks ({summary['tasks_with_2_or_more']} with 2 or more):")
        truth = labels.assign(ok=labels["label"].to_numpy() == items.loc[labels["task"], "gold"].to_numpy())
        true_accuracy = truth.groupby("worker")["ok"].mean()
        print(f"  {'annotator':30s} {'subs':>4s} {'skips':>5s} {'reliability [90% interval]':>27s} "
              f"{'gold':>9s} {'peers':>6s} {'true acc':>8s}")
        records = ledger.reliabilities(project, list(summary["annotators"]))
        ranked = sorted(summary["annotators"], key=lambda uid: records[uid].mean, reverse=True)
        shown = ranked if len(ranked) <= 2 * args.show else ranked[: args.show] + ranked[-args.show:]
        for uid in shown:
            row, record = summary["annotators"][uid], records[uid]
            if len(shown) < len(ranked) and uid == ranked[-args.show]:
                print(f"  ... {len(ranked) - len(shown)} more ...")
            email = names.get(uid, str(uid))
            gold = f"{record.gold_accuracy:.2f}/{record.gold_n}" if record.gold_n else "-"
            peers = f"{record.peer_agreement:.2f}" if record.peer_agreement is not None else "-"
            worker = email.split("@")[0].upper()
            true = true_accuracy.get(worker, float("nan"))
            print(f"  {email:30s} {row['submissions']:4d} {row['skips']:5d}"
                  f" {record.mean:8.2f} [{record.low:.2f}, {record.high:.2f}]       {gold:>9s} {peers:>6s} {true:8.2f}")
        scores = {item: ledger.task_score(project, tid) for item, tid in task_of.items()}
        judged = [item for item, score in scores.items() if score.get("consensus") is not None]
        right = sum(scores[item]["consensus"] == items.loc[item, "gold"] for item in judged)
        agreement = [s["agreement"] for s in scores.values() if s.get("agreement") is not None]
        print(f"Consensus matches the expert answer on {right} of {len(judged)} tasks; mean pairwise agreement"
              f" {sum(agreement) / max(len(agreement), 1):.2f}; {len(gold_items)} gold tasks")
        ok = summary["submissions"] == expected and len(predictions) >= len(task_ids) and len(judged) == len(task_ids)
        print("demo OK" if ok else "demo INCOMPLETE: see logs in " + str(log_dir), flush=True)
        if not args.exit and sys.stdin.isatty():
            print("Everything keeps running; Ctrl-C stops it.", flush=True)
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    finally:
        for service in reversed(started):
            service.stop()
        ls_server.stop()


@click.command("demo", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--tasks", type=int, default=20, show_default=True, help="RTE items to import.")
@click.option("--annotators", type=int, default=0, show_default=True,
              help="Replay only the N most active workers (0: every label of the items).")
@click.option("--show", type=int, default=6, show_default=True, help="Annotators to list at each end of the ranking.")
@click.option("--gold-every", type=int, default=5, show_default=True, help="Every Nth item is a gold item (0: none).")
@click.option("--ls-port", type=int, default=None,
              help="Label Studio's port (default: $CROWDGATE_LS_PORT, or a free one).")
@click.option("--keep-data", is_flag=True, help="Keep Label Studio's data in $CROWDGATE_DEMO_DIR (.crowdgate/demo).")
@click.option("--exit", "exit_after", is_flag=True, help="Stop everything once the summary is printed.")
def demo(tasks: int, annotators: int, show: int, gold_every: int, ls_port: int | None, keep_data: bool,
         exit_after: bool) -> None:
    """The demo: Label Studio, crowdgate and a real crowd (RTE, Snow et al. 2008), end to end.

    Starts Redis (REDIS_URL if it answers), a headless Label Studio, crowdgate's web app and an RQ worker;
    seeds an RTE project with every --gold-every-th item as gold; lets the ML backend pre-label it; submits the
    real crowd's labels as Label Studio users; and prints each annotator's reliability beside their true
    accuracy and each task's consensus against the expert answer. Takes a few minutes; logs go to
    $CROWDGATE_DEMO_DIR. Without --exit everything keeps running (on a terminal) until Ctrl-C.

    Exit code 0 when every submission was recorded and every task pre-labelled and judged, 1 otherwise.
    """
    settings = Settings.from_env()
    options = DemoOptions(tasks=tasks, annotators=annotators, show=show, gold_every=gold_every,
                          ls_port=(settings.ls_port or None) if ls_port is None else ls_port, keep_data=keep_data,
                          exit=exit_after)
    code = run(options, settings)
    if code:
        raise click.exceptions.Exit(code)


def main(argv: list[str] | None = None) -> int:
    """``crowdgate-demo``: an alias of ``crowdgate demo`` kept for one release; returns the exit code."""
    return run_alias(demo, argv, alias="crowdgate-demo", name="demo")


if __name__ == "__main__":
    sys.exit(main())
