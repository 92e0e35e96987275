"""``crowdgate``: operator commands on a running deployment.

    crowdgate rebuild-state PROJECT   # wipe PROJECT's scoring state and rebuild it from Label Studio alone
    crowdgate reconcile [PROJECT]     # one reconciliation pass now (every known project without PROJECT)

Both read ``REDIS_URL``, ``CROWDGATE_KEY_PREFIX``, ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` like the
services, and print their counts as JSON.

``rebuild-state`` rebuilds scoring (:func:`qa_hooks.rebuild.rebuild_project`) and, of routing, what Label Studio
holds: a task marked final in ``meta.crowdgate.final`` gets its final route back. Policies, tiers, exam
attempts, flags set by hand, escalation links and the audit log live only in Redis and are left as they are
(see the README). It replays through scoring only: routing acts again on the next event of each task, not on
history it already acted on.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import redis

from core.labelstudio import LabelStudioClient
from core.settings import Settings, use
from crowdgate.pipeline import reconcile_and_route
from qa_hooks.jobs import process_event
from qa_hooks.rebuild import rebuild_project
from routing.audit import AuditLog
from routing.state import RoutingState

__all__ = ["main", "rebuild_state", "restore_final_routes"]


def restore_final_routes(project: int, tasks: list[dict[str, Any]], state: RoutingState) -> int:
    """Give every task whose meta carries crowdgate's final mark its final route, where Redis lost it."""
    marked = {int(t["id"]): ((t.get("meta") or {}).get("crowdgate") or {}).get("final") for t in tasks}
    marked = {task: final for task, final in marked.items() if isinstance(final, dict)}
    restored = 0
    for task, route in state.routes(project, marked).items():
        if route.status != "final":
            final = marked[task]
            state.update_route(project, task, status="final", final_label=final.get("label"),
                               required_tier=final.get("required_tier"))
            restored += 1
    return restored


def rebuild_state(project: int, prefix: str, connection: redis.Redis, client: LabelStudioClient) -> dict[str, Any]:
    """Scoring state from Label Studio's export, then routing's final marks; audited."""
    tasks = client.export(project)
    totals = rebuild_project(project, prefix, connection, client, process_event, tasks=tasks)
    totals["final_routes_restored"] = restore_final_routes(project, tasks, RoutingState(connection, prefix))
    AuditLog(connection, prefix).record("action", "rebuild_state", project,
                                        reason="scoring state rebuilt from Label Studio's export",
                                        evidence={k: v for k, v in totals.items() if k != "skipped"})
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crowdgate", description="Operator commands of crowdgate.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("rebuild-state", help="rebuild a project's scoring state from Label Studio alone") \
        .add_argument("project", type=int)
    sub.add_parser("reconcile", help="reconcile with Label Studio now (scored and routed like webhooks)") \
        .add_argument("project", type=int, nargs="?")
    args = parser.parse_args(argv)
    settings = use(Settings.from_env())
    connection = redis.Redis.from_url(settings.redis_url)
    client = LabelStudioClient.from_settings(settings)
    prefix = settings.key_prefix
    if args.command == "rebuild-state":
        result: Any = rebuild_state(args.project, prefix, connection, client)
    else:
        result = reconcile_and_route(prefix, connection, None if args.project is None else [args.project])
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
