"""Replay a real crowd with injected bad annotators through crowdgate's fraud signals and risk score.

    crowdgate-fraud-replay --set rte [--seeds 10] [--threshold 4]
    crowdgate-fraud-replay --labels my.labels.csv --items my.items.jsonl   # any item,worker,label set with gold

The real workers' labels are replayed in random order, each worker's own in a random order with their gold
tasks first (the exam), with lead times drawn per worker from a log-normal (a personal speed, then per answer)
scaled by the item's text length. Injected: uniform random clickers, always-first-option, always-majority-class,
too-fast bots (random answers, about 1 s each, posted back to back), a colluding pair (one answers at random,
the other copies it on the same tasks), a worker who gives every ML pre-label (a simulated pre-labeller right
70 % of the time), and, on sets with item text, a copy-paster who pastes one of three canned justifications,
lightly edited, into a TextArea (the honest workers write a sentence from the item). The fraud model
(:class:`qa_hooks.fraud.FraudRisk`, the product's code) is fitted on the whole replay, then each annotator is
judged after each of their submissions; flagged means a risk at or above ``--threshold`` (the policy's
``fraud.pause_at``). Label Studio Enterprise's pausing-plugin rules are the baseline on the same streams.

Prints one JSON line per injected profile, and one for the set's real near-random workers (accuracy < 0.6).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from qa_hooks.fraud import Answer, FraudRisk
from routing.policy import DEFAULT_POLICY
from scripts.crowd_sets import load_items, load_labels

PROFILES = ("uniform", "first_option", "majority_class", "too_fast", "colluding_pair", "copy_paste", "prelabel")
FIRST_N = 20  # recall counts flags within a bad annotator's first 20 submissions
BOT_SUBMISSIONS = 40
PRELABEL_ACCURACY = 0.7
FILLER = ("the", "passage", "says", "so", "it", "clearly", "seems", "because", "mentions", "not", "about", "this",
          "which", "means", "implies", "sentence", "claim", "stated", "true", "false", "given")
CANNED = ("I think this is correct because it matches the text.",
          "The answer follows from what the passage says here.",
          "Based on the sentence above this is my answer.")


@dataclass
class CrowdSet:
    name: str
    labels: pd.DataFrame  # task, worker, label (strings)
    gold: dict[str, str]
    text: dict[str, str]

    @property
    def options(self) -> tuple[str, ...]:
        values = sorted(set(self.labels["label"]) | set(self.gold.values()))
        return tuple(sorted(values, key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit()
                                                   else 0, v)))


def load_set(name: str | None = None, labels: Path | None = None, items: Path | None = None) -> CrowdSet:
    """A crowd set by name (``scripts.crowd_sets``) or from an ``item,worker,label`` CSV plus a JSONL of items
    with ``item``, ``gold`` and any text fields."""
    if name is not None:
        frame, table = load_labels(name), load_items(name)
    else:
        assert labels is not None and items is not None
        frame = pd.read_csv(labels, dtype=str).rename(columns={"item": "task"})[["task", "worker", "label"]]
        rows = [json.loads(line) for line in items.read_text().splitlines() if line.strip()]
        table = pd.DataFrame(rows).astype({"item": str, "gold": str}).rename(columns={"item": "task"}).set_index("task")
        name = labels.name.split(".")[0]
    text_cols = [c for c in table.columns if c != "gold" and table[c].map(lambda v: isinstance(v, str)).all()]
    text = {str(t): " ".join(str(row[c]) for c in text_cols if isinstance(row[c], str)) for t, row in table.iterrows()}
    frame = frame[frame["task"].isin(table.index)]
    return CrowdSet(name, frame.reset_index(drop=True), table["gold"].astype(str).to_dict(), text)


# -- Label Studio Enterprise's pausing-plugin rules (the baseline) ------------------------------------------


def baseline_flag_at(answers: Sequence[Answer], rate_rule: bool = True) -> int | None:
    """The first submission (1-based) at which an Enterprise pausing-plugin rule fires: the same TextArea value
    3 times in a row; the last 10 choices all one option; 20 submissions in under 10 minutes (``rate_rule``)."""
    for i in range(len(answers)):
        n = i + 1
        texts = [a.text for a in answers[max(0, n - 3):n]]
        if n >= 3 and texts[0] and all(t == texts[0] for t in texts):
            return n
        options = [a.option for a in answers[max(0, n - 10):n]]
        if n >= 10 and options[0] is not None and all(o == options[0] for o in options):
            return n
        if rate_rule and n >= 20 and answers[i].at is not None and answers[n - 20].at is not None \
                and answers[i].at - answers[n - 20].at < 600:
            return n
    return None


# -- the replay -----------------------------------------------------------------------------------------------


class Replay:
    """One seed's replay of a crowd set with injected bad annotators."""

    def __init__(self, crowd: CrowdSet, seed: int, gold_share: float = 0.1, bots_per_profile: int = 2,
                 with_text: bool | None = None) -> None:
        self.crowd = crowd
        self.rng = random.Random(seed)
        self.options = crowd.options
        tasks = sorted(crowd.gold)
        self.gold_tasks = set(self.rng.sample(tasks, max(int(len(tasks) * gold_share), min(20, len(tasks)))))
        self.prelabel = {t: (g if self.rng.random() < PRELABEL_ACCURACY else
                             self.rng.choice([o for o in self.options if o != g] or [g]))
                         for t, g in crowd.gold.items()}
        lengths = [len(crowd.text.get(t, "")) for t in tasks]
        self.has_text = (statistics.median(lengths) > 20) if with_text is None else with_text
        self.majority = Counter(crowd.gold.values()).most_common(1)[0][0]
        self.streams: dict[str, list[dict[str, Any]]] = {}
        self.kind: dict[str, str] = {}
        self._real()
        self._bots(bots_per_profile)

    def _seconds(self, task: str, speed: float) -> float:
        chars = len(self.crowd.text.get(task, ""))
        base = 6.0 + 0.06 * chars  # ~6 s to look and click, plus reading at ~17 characters a second
        return base * pow(2.718281828, speed + self.rng.gauss(0.0, 0.5))

    def _honest_text(self, task: str, option: str) -> str | None:
        if not self.has_text:
            return None
        words = self.crowd.text.get(task, "").split()
        picked = [self.rng.choice(words) for _ in range(self.rng.randint(3, 6))] if words else []
        return f"{option}: " + " ".join(self.rng.sample(FILLER, 3) + picked)

    def _real(self) -> None:
        for worker, group in self.crowd.labels.groupby("worker"):
            rows = list(zip(group["task"], group["label"], strict=True))
            self.rng.shuffle(rows)
            rows.sort(key=lambda r: r[0] not in self.gold_tasks)  # the exam: their gold tasks first
            speed = self.rng.gauss(0.0, 0.35)
            name = f"w:{worker}"
            self.kind[name] = "real"
            self.streams[name] = [{"task": t, "option": lab, "seconds": self._seconds(t, speed),
                                   "text": self._honest_text(t, lab)} for t, lab in rows]

    def _bot_tasks(self) -> list[str]:
        tasks = sorted(self.crowd.gold)
        gold = [t for t in tasks if t in self.gold_tasks]
        rest = [t for t in tasks if t not in self.gold_tasks]
        picked_gold = self.rng.sample(gold, min(2, len(gold)))
        picked = picked_gold + self.rng.sample(rest, min(BOT_SUBMISSIONS - len(picked_gold), len(rest)))
        self.rng.shuffle(picked)
        return picked

    def _bots(self, per_profile: int) -> None:
        for profile in PROFILES:
            if profile == "copy_paste" and not self.has_text:
                continue
            for i in range(per_profile if profile != "colluding_pair" else max(per_profile // 2, 1)):
                name = f"bot:{profile}:{i}"
                tasks = self._bot_tasks()
                speed = self.rng.gauss(0.0, 0.35)
                stream = []
                for t in tasks:
                    option = self.rng.choice(self.options)
                    seconds = self._seconds(t, speed)
                    text = self._honest_text(t, option)
                    if profile == "first_option":
                        option = self.options[0]
                    elif profile == "majority_class":
                        option = self.majority
                    elif profile == "too_fast":
                        seconds = self.rng.lognormvariate(0.0, 0.3)
                    elif profile == "prelabel":
                        option = self.prelabel[t]
                    elif profile == "copy_paste":
                        option = self.crowd.gold[t] if self.rng.random() < 0.8 else option
                        text = self.rng.choice(CANNED)
                        if self.rng.random() < 0.5:
                            text = text.replace(" ", "  ", 1) if self.rng.random() < 0.5 else text.rstrip(".") + "!"
                    if text is not None and not text.startswith(f"{option}:") and profile != "copy_paste":
                        text = f"{option}:" + text.split(":", 1)[-1]
                    stream.append({"task": t, "option": option, "seconds": seconds, "text": text})
                self.kind[name] = profile
                self.streams[name] = stream
                if profile == "colluding_pair":
                    partner = f"bot:{profile}:{i}b"
                    self.kind[partner] = profile
                    self.streams[partner] = [{**s, "seconds": self._seconds(s["task"], speed + 0.1),
                                              "text": self._honest_text(s["task"], s["option"])} for s in stream]

    def answers(self) -> dict[str, list[Answer]]:
        """Every annotator's answers, timed on one clock (random interleaving), with consensus and pre-labels."""
        by_task: dict[str, Counter[str]] = {}
        for stream in self.streams.values():
            for s in stream:
                by_task.setdefault(s["task"], Counter())[s["option"]] += 1
        out: dict[str, list[Answer]] = {}
        for name, stream in self.streams.items():
            clock = self.rng.uniform(0, 86400)
            answers = []
            for s in stream:
                clock += s["seconds"] + (self.rng.uniform(0.1, 0.5) if self.kind[name] == "too_fast"
                                         else self.rng.uniform(1.0, 8.0))
                others = by_task[s["task"]].copy()
                others[s["option"]] -= 1
                top = others.most_common(1)
                consensus = top[0][0] if top and top[0][1] > 0 else None
                answers.append(Answer(task=s["task"], at=clock, lead_time=round(s["seconds"], 2), option=s["option"],
                                      text=s["text"], length=float(len(self.crowd.text.get(s["task"], ""))),
                                      gold=self.crowd.gold[s["task"]] if s["task"] in self.gold_tasks else None,
                                      consensus=consensus, prelabel=self.prelabel.get(s["task"])))
            out[name] = answers
        return out


def checkpoints(n: int) -> list[int]:
    """After which submissions an annotator is judged: each of the first 50, then every 10th, and the last."""
    points = list(range(1, min(n, 50) + 1)) + list(range(60, n + 1, 10))
    return sorted({*points, n})


def flag_at(model: FraudRisk, name: str, answers: Sequence[Answer], threshold: float) -> int | None:
    for k in checkpoints(len(answers)):
        if model.assess(name, answers[:k]).risk >= threshold:
            return k
    return None


def run_seed(crowd: CrowdSet, seed: int, threshold: float, **options: Any) -> dict[str, Any]:
    replay = Replay(crowd, seed, **options)
    answers = replay.answers()
    model = FraudRisk(options=crowd.options).fit(answers)
    out: dict[str, Any] = {"bots": {}, "real": {}}
    for name, stream in answers.items():
        truth = [a.option == crowd.gold[a.task] for a in stream]
        record = {"flag_at": flag_at(model, name, stream, threshold), "baseline_at": baseline_flag_at(stream),
                  "content_at": baseline_flag_at(stream, rate_rule=False),
                  "accuracy": sum(truth) / len(truth), "n": len(stream), "profile": replay.kind[name]}
        if replay.kind[name] == "real":
            out["real"][name] = record
        else:
            out["bots"][name] = record
    return out


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


def summarize(crowd: CrowdSet, runs: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """One line per profile, and one for the real near-random workers."""
    lines = []
    honest = [r for run in runs for r in run["real"].values() if r["accuracy"] >= 0.7]
    ffr = sum(r["flag_at"] is not None for r in honest) / len(honest) if honest else None
    base_ffr = sum(r["baseline_at"] is not None for r in honest) / len(honest) if honest else None
    content_ffr = sum(r["content_at"] is not None for r in honest) / len(honest) if honest else None
    for profile in PROFILES:
        bots = [r for run in runs for r in run["bots"].values() if r["profile"] == profile]
        if not bots:
            continue
        lines.append({
            "bench": "fraud", "dataset": crowd.name, "profile": profile, "seeds": len(runs),
            "bad_annotators": len(bots),
            "recall": round(sum(r["flag_at"] is not None and r["flag_at"] <= FIRST_N for r in bots) / len(bots), 3),
            "false_flag_rate": None if ffr is None else round(ffr, 4),
            "median_submissions_to_flag": _median([r["flag_at"] for r in bots if r["flag_at"] is not None]),
            "baseline_recall": round(sum(r["baseline_at"] is not None and r["baseline_at"] <= FIRST_N
                                         for r in bots) / len(bots), 3),
            "baseline_false_flag_rate": None if base_ffr is None else round(base_ffr, 4),
            "baseline_median_submissions_to_flag": _median([r["baseline_at"] for r in bots
                                                            if r["baseline_at"] is not None]),
            # the plugin's two content rules alone (its rate rule fires on anyone faster than 30 s an item)
            "baseline_content_recall": round(sum(r["content_at"] is not None and r["content_at"] <= FIRST_N
                                                 for r in bots) / len(bots), 3),
            "baseline_content_false_flag_rate": None if content_ffr is None else round(content_ffr, 4),
            "honest_workers_judged": len(honest), "threshold": threshold,
        })
    weak = [r for run in runs for r in run["real"].values() if r["accuracy"] < 0.6 and r["n"] >= 10]
    if weak:
        lines.append({
            "bench": "fraud", "dataset": crowd.name, "profile": "real_near_random", "seeds": len(runs),
            "workers": len(weak) // max(len(runs), 1), "labels_median": _median([r["n"] for r in weak]),
            "flagged_share": round(sum(r["flag_at"] is not None for r in weak) / len(weak), 3),
            "flagged_within_20": round(sum(r["flag_at"] is not None and r["flag_at"] <= FIRST_N for r in weak)
                                       / len(weak), 3),
            "median_submissions_to_flag": _median([r["flag_at"] for r in weak if r["flag_at"] is not None]),
            "baseline_flagged_share": round(sum(r["baseline_at"] is not None for r in weak) / len(weak), 3),
            "baseline_median_submissions_to_flag": _median([r["baseline_at"] for r in weak
                                                            if r["baseline_at"] is not None]),
            "threshold": threshold,
        })
    return lines


def evaluate(crowd: CrowdSet, seeds: int = 10, threshold: float | None = None, **options: Any) -> list[dict]:
    threshold = DEFAULT_POLICY.fraud.pause_at if threshold is None else threshold
    runs = [run_seed(crowd, seed, threshold, **options) for seed in range(seeds)]
    return summarize(crowd, runs, threshold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", help="a crowd set by name (rte, temp, dog, wsd, ...)")
    parser.add_argument("--labels", type=Path, help="an item,worker,label CSV (with --items)")
    parser.add_argument("--items", type=Path, help="a JSONL of items with item, gold and text fields")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=None, help="risk that flags (default: fraud.pause_at)")
    parser.add_argument("--gold-share", type=float, default=0.1)
    args = parser.parse_args(argv)
    if not args.set and not (args.labels and args.items):
        parser.error("give --set NAME, or --labels and --items")
    crowd = load_set(args.set, args.labels, args.items)
    for line in evaluate(crowd, args.seeds, args.threshold, gold_share=args.gold_share):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PROFILES", "CrowdSet", "Replay", "baseline_flag_at", "evaluate", "load_set", "main"]
