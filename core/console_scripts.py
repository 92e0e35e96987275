"""The old console scripts (``crowdgate-policy``, ``crowdgate-audit``, ``crowdgate-replay``, ``crowdgate-demo``,
``crowdgate-labelstudio``) as aliases of their ``crowdgate`` subcommand, kept for one release.

Each runs the very click command ``crowdgate NAME`` runs, standalone, and returns its exit code rather than
leaving the interpreter, so that tests and callers can call it in-process as they called the argparse mains:
0 ok, 1 failure, and on a usage error click's message and ``SystemExit(2)``, as argparse and click both do.
"""

from __future__ import annotations

import click

__all__ = ["run_alias"]


def run_alias(command: click.Command, argv: list[str] | None, *, alias: str, name: str) -> int:
    """Run ``command`` as the console script ``alias`` (``crowdgate NAME``'s old name) on ``argv``."""
    click.echo(f"note: `{alias}` is an alias of `crowdgate {name}`, kept for one release; use `crowdgate {name}`.",
               err=True)
    try:
        result = command.main(args=argv, prog_name=alias, standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from exc
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return result if isinstance(result, int) else 0
