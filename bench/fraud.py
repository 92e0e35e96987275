"""Benchmark crowdgate's fraud signals and risk score on the real crowds with injected bad annotators.

Run from the repository root::

    python bench/fraud.py [--seeds 10] [--sets rte,temp,dog,wsd] [--threshold 2.5]

Each set (``scripts.crowd_sets``: shipped in ``data/crowd``, the others from ``$CROWDGATE_CROWD_DATA``) is
replayed by ``scripts/fraud_replay.py`` (``crowdgate-fraud-replay`` runs it on any label set) with lead times
drawn per worker and injected uniform clickers, always-first-option, always-majority-class, too-fast bots, a
colluding pair, a pre-label acceptor and, on sets with item text, a copy-paster in a TextArea. The product's
:class:`qa_hooks.fraud.FraudRisk` judges each annotator after each submission; flagged = risk at or above the
policy's ``fraud.pause_at``. Label Studio Enterprise's pausing-plugin rules run on the same streams as the
baseline. One JSON line per (set, profile) with ``recall`` (bad annotators flagged within their first 20
submissions), ``false_flag_rate`` (real workers with accuracy >= 0.7 against gold ever flagged),
``median_submissions_to_flag`` and the baseline's figures; one line per set for its real near-random workers
(accuracy < 0.6). The first line describes the environment.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from routing.policy import DEFAULT_POLICY  # noqa: E402
from scripts.crowd_sets import available, dataset_dir  # noqa: E402
from scripts.fraud_replay import evaluate, load_set  # noqa: E402

SETS = ("rte", "temp", "dog", "wsd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--threshold", type=float, default=DEFAULT_POLICY.fraud.pause_at)
    args = parser.parse_args(argv)
    print(json.dumps({"bench": "fraud", "env": {"python": platform.python_version(), "machine": platform.machine(),
                                                 "seeds": args.seeds, "threshold": args.threshold}}), flush=True)
    for name in args.sets.split(","):
        if not available(name):
            print(json.dumps({"bench": "fraud", "dataset": name, "skipped": "not on this machine "
                              "(set CROWDGATE_CROWD_DATA)"}), flush=True)
            continue
        started = time.perf_counter()
        for line in evaluate(load_set(name), args.seeds, args.threshold):
            print(json.dumps({**line, "source": str(dataset_dir(name))}), flush=True)
        print(json.dumps({"bench": "fraud", "dataset": name, "seconds": round(time.perf_counter() - started, 1)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
