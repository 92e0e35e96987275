"""Console scripts of the routing side.

    crowdgate-policy set PROJECT FILE      # validate FILE and bind it to PROJECT (stored in Redis)
    crowdgate-policy show PROJECT          # the policy in force (the default file when none is bound)
    crowdgate-policy unset PROJECT         # back to the default policy
    crowdgate-policy check FILE            # validate only
    crowdgate-policy tier PROJECT USER TIER [--reason R]   # set an annotator's tier by hand (audited)
    crowdgate-policy tiers PROJECT         # annotators and their tiers
    crowdgate-policy flag PROJECT USER --reason R   # an annotator's labels stop counting (audited)
    crowdgate-policy unflag PROJECT USER [--reason R]   # they count again (audited)
    crowdgate-audit [--project P] [--task T] [--annotator U] [--kind K] [--action A] [--since ISO]
                    [--format jsonl|csv] [--output FILE]

Both read ``REDIS_URL`` and ``CROWDGATE_KEY_PREFIX`` like the other crowdgate services.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import redis

from core.settings import Settings, use
from routing.audit import KINDS, AuditLog, to_csv, to_jsonl
from routing.exam import offer_gold
from routing.policy import PolicyError, parse_policy
from routing.state import RoutingState


def _connect(args: argparse.Namespace) -> tuple[redis.Redis, str]:
    settings = use(Settings.from_env())
    return redis.Redis.from_url(args.redis_url or settings.redis_url), args.prefix or settings.key_prefix


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, help="default: $REDIS_URL")
    parser.add_argument("--prefix", default=None, help="key prefix, default: $CROWDGATE_KEY_PREFIX or cg")


def policy_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crowdgate-policy", description="Bind routing policies to projects.")
    _common(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p_set = sub.add_parser("set", help="validate a policy file and bind it to a project")
    p_set.add_argument("project", type=int)
    p_set.add_argument("file", type=Path)
    for name in ("show", "unset", "tiers"):
        sub.add_parser(name).add_argument("project", type=int)
    sub.add_parser("check", help="validate a policy file").add_argument("file", type=Path)
    p_tier = sub.add_parser("tier", help="set an annotator's tier by hand")
    p_tier.add_argument("project", type=int)
    p_tier.add_argument("user", type=int, help="Label Studio user id")
    p_tier.add_argument("tier")
    p_tier.add_argument("--reason", default="set by hand")
    p_flag = sub.add_parser("flag", help="flag an annotator by hand: their labels stop counting")
    p_unflag = sub.add_parser("unflag", help="remove a flag set by hand")
    for p in (p_flag, p_unflag):
        p.add_argument("project", type=int)
        p.add_argument("user", type=int, help="Label Studio user id")
    p_flag.add_argument("--reason", required=True, help="why, kept with the flag and in the audit log")
    p_unflag.add_argument("--reason", default="unflagged by hand")
    args = parser.parse_args(argv)

    if args.command == "check":
        try:
            policy = parse_policy(args.file.read_text(encoding="utf-8"), origin=str(args.file))
        except (OSError, PolicyError) as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{args.file}: valid ({' -> '.join(policy.tier_names)})")
        return 0

    connection, prefix = _connect(args)
    state = RoutingState(connection, prefix)
    audit = AuditLog(connection, prefix)
    if args.command == "set":
        try:
            text = args.file.read_text(encoding="utf-8")
            policy = state.set_policy(args.project, text, origin=str(args.file.resolve()))
        except (OSError, PolicyError) as exc:
            print(exc, file=sys.stderr)
            return 1
        audit.record("action", "set_policy", args.project, reason=f"policy {args.file} bound",
                     evidence={"origin": str(args.file.resolve()), "tiers": list(policy.tier_names)})
        print(f"project {args.project}: policy {args.file} ({' -> '.join(policy.tier_names)})")
        return 0
    if args.command == "unset":
        state.unset_policy(args.project)
        audit.record("action", "unset_policy", args.project, reason="back to the default policy")
        print(f"project {args.project}: default policy")
        return 0
    if args.command == "show":
        text, origin = state.policy_source(args.project)
        print(f"# project {args.project}: {origin}")
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    if args.command == "tiers":
        policy = state.policy(args.project)
        for user, tier in sorted(state.tiers(args.project).items()):
            print(f"{user}\t{tier}")
        print(f"# others: {policy.tiers[0].name}", file=sys.stderr)
        return 0
    if args.command == "flag":
        reason = args.reason.strip()
        if not reason:
            print("--reason must not be empty", file=sys.stderr)
            return 1
        state.flag_annotator(args.project, args.user, reason)
        audit.record("flag", "flag_annotator", args.project, None, [args.user], reason, {"by": "hand"})
        print(f"project {args.project}: user {args.user} flagged ({reason})")
        return 0
    if args.command == "unflag":
        was = state.flagged(args.project).get(args.user)
        if was is None:
            print(f"project {args.project}: user {args.user} is not flagged by hand", file=sys.stderr)
            return 1
        state.unflag_annotator(args.project, args.user)
        audit.record("action", "unflag_annotator", args.project, None, [args.user], args.reason, {"was": was})
        print(f"project {args.project}: user {args.user} unflagged")
        return 0
    # tier
    policy = state.policy(args.project)
    if args.tier not in policy.tier_names:
        print(f"unknown tier {args.tier!r}; the policy has {list(policy.tier_names)}", file=sys.stderr)
        return 1
    before = state.annotator(args.project, args.user, policy).tier
    version = state.set_tier(args.project, args.user, args.tier)
    audit.record("action", "set_tier", args.project, None, [args.user], args.reason,
                 {"from": before, "to": args.tier, "version": version})
    # A newcomer set by hand gets their exam gold (or a qualified annotator their gold share) offered now,
    # not only after their first submission.
    offer_gold(args.project, args.user, prefix, connection, reason="tier set by hand")
    print(f"project {args.project}: user {args.user} {before} -> {args.tier}")
    return 0


def _timestamp(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def audit_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crowdgate-audit", description="Query and export crowdgate's audit log.")
    _common(parser)
    parser.add_argument("--project", type=int)
    parser.add_argument("--task", type=int, help="needs --project")
    parser.add_argument("--annotator", type=int)
    parser.add_argument("--kind", choices=KINDS)
    parser.add_argument("--action", help="e.g. escalate, task:escalate, write_back")
    parser.add_argument("--since", type=_timestamp, help="ISO time or Unix seconds")
    parser.add_argument("--until", type=_timestamp, help="ISO time or Unix seconds")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    parser.add_argument("--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.task is not None and args.project is None:
        parser.error("--task needs --project")
    connection, prefix = _connect(args)
    entries = AuditLog(connection, prefix).query(
        project=args.project, task=args.task, annotator=args.annotator, kind=args.kind, action=args.action,
        since=args.since, until=args.until)
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        if args.format == "csv":
            to_csv(entries, out)
        else:
            to_jsonl(entries, out)
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"{len(entries)} entries -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(policy_main())
