"""Benchmark the near-duplicate check ``crowdgate seed`` runs before an import, on the real RTE items.

Run from the repository root::

    python bench/duplicates.py [--copies 80] [--seed 0] [--scale 20000]

The 800 RTE items (text + hypothesis, ``data/crowd/rte.items.jsonl``) get three kinds of planted copies, each of
``--copies`` random items: ``format`` (the same words, other case, spacing and punctuation: a duplicate),
``edit`` (one word of the text dropped and one replaced: a near-duplicate) and ``other_hypothesis`` (the same
text with another item's hypothesis: a different task, which must not be flagged). Each method's line gives the
share of planted pairs of each kind it groups (recall for the first two, the false-positive rate for the third),
the pairs it groups among the original items, and its time. The baseline, measured in the same run, is exact
equality of the raw task text; ``whole_text_jaccard_0.8`` is the same shingle check on the fields joined into
one text, which field-by-field comparison replaced. A last line times crowdgate's check on ``--scale`` tasks
(each an RTE text with a random item's hypothesis).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from crowdgate.duplicates import NearDuplicates, normalise, task_fields  # noqa: E402
from scripts.crowd_sets import dataset_dir  # noqa: E402


def load_items() -> list[dict[str, str]]:
    folder = dataset_dir("rte")
    if folder is None:
        raise SystemExit("rte is not on this machine (data/crowd/rte.items.jsonl)")
    rows = [json.loads(line) for line in (folder / "rte.items.jsonl").read_text().splitlines() if line.strip()]
    return [{"text": r["text"], "hypothesis": r["hypothesis"]} for r in rows]


def reformat(data: dict[str, str], rng: random.Random) -> dict[str, str]:
    text = data["text"].upper() if rng.random() < 0.5 else data["text"].lower()
    text = "  " + text.replace(",", " ,").replace(".", " . ").replace(" ", "  ", 2) + "!"
    return {"text": text, "hypothesis": data["hypothesis"].rstrip(".") + " ?"}


def edit(data: dict[str, str], rng: random.Random, words: list[str]) -> dict[str, str]:
    tokens = data["text"].split()
    if len(tokens) > 4:
        del tokens[rng.randrange(len(tokens))]
        tokens[rng.randrange(len(tokens))] = rng.choice(words)
    return {"text": " ".join(tokens), "hypothesis": data["hypothesis"]}


def exact_raw_groups(texts: list[Any]) -> list[tuple[int, tuple[int, ...]]]:
    first: dict[Any, int] = {}
    groups: dict[int, list[int]] = {}
    for i, text in enumerate(texts):
        keep = first.setdefault(text, i)
        if keep != i:
            groups.setdefault(keep, []).append(i)
    return [(k, tuple(v)) for k, v in groups.items()]


def exact_normalised_groups(texts: list[tuple[str, ...]]) -> list[tuple[int, tuple[int, ...]]]:
    return exact_raw_groups([tuple(normalise(f) for f in t) for t in texts])


def whole_text_jaccard(texts: list[tuple[str, ...]]) -> list[tuple[int, tuple[int, ...]]]:
    """The same shingle Jaccard on the task's fields joined into one text (what field-by-field replaced)."""
    return [(g.keep, g.others) for g in NearDuplicates(threshold=0.8).fit(["\n".join(t) for t in texts]).groups_]


def score(groups: list[tuple[int, tuple[int, ...]]], planted: dict[str, list[tuple[int, int]]],
          originals: int) -> dict[str, Any]:
    together: dict[int, int] = {}
    for keep, others in groups:
        for i in (keep, *others):
            together[i] = keep
    joined = {kind: sum(together.get(a, a) == together.get(b, b) for a, b in pairs) / max(len(pairs), 1)
              for kind, pairs in planted.items()}
    among_originals = sum(1 for keep, others in groups for i in others if keep < originals and i < originals)
    return {"format_recall": round(joined["format"], 3), "edit_recall": round(joined["edit"], 3),
            "other_hypothesis_false_positive": round(joined["other_hypothesis"], 3),
            "pairs_among_originals": among_originals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=20000)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    items = load_items()
    words = sorted({w for item in items for w in item["text"].split()})
    tasks = list(items)
    planted: dict[str, list[tuple[int, int]]] = {"format": [], "edit": [], "other_hypothesis": []}
    for kind in planted:
        for source in rng.sample(range(len(items)), args.copies):
            if kind == "format":
                copy = reformat(items[source], rng)
            elif kind == "edit":
                copy = edit(items[source], rng, words)
            else:
                other = rng.choice([i for i in range(len(items))
                                    if items[i]["hypothesis"] != items[source]["hypothesis"]])
                copy = {"text": items[source]["text"], "hypothesis": items[other]["hypothesis"]}
            planted[kind].append((source, len(tasks)))
            tasks.append(copy)
    texts = [task_fields(t, ("hypothesis", "text")) for t in tasks]
    print(json.dumps({"bench": "duplicates", "python": platform.python_version(), "machine": platform.machine(),
                      "items": len(items), "tasks": len(tasks), "copies_per_kind": args.copies, "seed": args.seed}))
    methods = {
        "baseline_exact_raw": exact_raw_groups,
        "exact_normalised": exact_normalised_groups,
        "whole_text_jaccard_0.8": whole_text_jaccard,
        **{f"crowdgate_jaccard_{t}": (lambda ts, t=t: [(g.keep, g.others) for g in
                                                      NearDuplicates(threshold=t).fit(ts).groups_])
           for t in (0.7, 0.8, 0.9)},
    }
    for name, method in methods.items():
        start = time.perf_counter()
        groups = method(texts)
        elapsed = time.perf_counter() - start
        print(json.dumps({"method": name, **score(groups, planted, len(items)), "seconds": round(elapsed, 3)}))
    # scale: each task an RTE text with another random item's hypothesis (a premise reused many times, as RTE
    # does, but few true duplicates)
    big = [task_fields({"text": rng.choice(items)["text"], "hypothesis": rng.choice(items)["hypothesis"]},
                       ("hypothesis", "text")) for _ in range(args.scale)]
    for name, method in (("baseline_exact_raw", exact_raw_groups),
                         ("crowdgate_jaccard_0.8", methods["crowdgate_jaccard_0.8"])):
        start = time.perf_counter()
        groups = method(big)
        print(json.dumps({"method": name, "scale_tasks": len(big), "groups": len(groups),
                          "seconds": round(time.perf_counter() - start, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
