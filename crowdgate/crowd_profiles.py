"""Simulated annotators: how each kind of crowd worker answers a task (pure: no I/O, no clock).

A profile turns what a task offers (:class:`TaskChoices`: the options of each Choices control and, where the
simulator knows it, the true answer) into an :class:`Answer`: a label per control, or a skip, with the
``lead_time`` Label Studio records. Randomness comes only from the ``random.Random`` passed in, so a seed fixes a
whole run.

The synthetic kinds follow the worker types of the crowdsourcing literature: diligent and sloppy workers are
one-coin annotators (right with probability ``accuracy``, otherwise a uniformly wrong option; Dawid & Skene 1979,
Raykar et al. 2010), a spammer answers uniformly at random (Raykar & Yu 2012, "Eliminating spammers"), a bot
always picks the first option faster than anyone can read, and a colluding pair shares one answer per task
(the second copies the first; KhudaBukhsh et al. 2014, "Detecting non-adversarial collusion in crowdsourcing").
Lead times are log-normal, which is how human task times are distributed (e.g. Rzeszotarski & Kittur 2011).
:class:`ReplayWorker` answers with a real crowd worker's recorded labels.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["PROFILE_KINDS", "Answer", "Bot", "ColludingPair", "Copier", "Diligent", "OneCoin", "Profile",
           "ProfileMixError", "ReplayWorker", "Sloppy", "Spammer", "TaskChoices", "lognormal_lead_time",
           "parse_mix", "synthetic_crowd"]


@dataclass(frozen=True)
class TaskChoices:
    """One task as a simulated annotator sees it: its id, the options of each control (in config order) and
    the true answer per control where the simulator knows one (gold, or a latent truth it drew)."""

    task: int
    options: Mapping[str, Sequence[str]]
    truth: Mapping[str, str] = field(default_factory=dict)
    item: str | None = None  # the crowd set's item id, for replays


@dataclass(frozen=True)
class Answer:
    """``labels`` maps control -> chosen option; ``None`` is a skip (Label Studio's ``was_cancelled``)."""

    labels: Mapping[str, str] | None
    lead_time: float

    @property
    def skipped(self) -> bool:
        return self.labels is None


def lognormal_lead_time(rng: random.Random, median_s: float, sigma: float) -> float:
    """Seconds spent on a task: log-normal around ``median_s`` (``sigma`` on the log scale), at least 0.1 s."""
    return round(max(0.1, rng.lognormvariate(math.log(median_s), sigma)), 3)


class Profile:
    """How one simulated annotator answers. Subclasses set ``kind`` and implement :meth:`answer`."""

    kind = "profile"

    def answer(self, task: TaskChoices, rng: random.Random) -> Answer:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class OneCoin(Profile):
    """Right with probability ``accuracy`` when the truth is known (a uniformly drawn wrong option otherwise);
    uniform when it is not; skips with probability ``skip_rate``."""

    accuracy: float = 0.9
    skip_rate: float = 0.0
    median_s: float = 10.0
    sigma: float = 0.5
    kind = "one_coin"

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0 or not 0.0 <= self.skip_rate < 1.0:
            raise ValueError(f"{self.kind}: accuracy must be in [0, 1] and skip_rate in [0, 1)")

    def choose(self, options: Sequence[str], truth: str | None, rng: random.Random) -> str:
        if truth is None or truth not in options:
            return rng.choice(list(options))
        if rng.random() < self.accuracy or len(options) == 1:
            return truth
        return rng.choice([o for o in options if o != truth])

    def answer(self, task: TaskChoices, rng: random.Random) -> Answer:
        lead_time = lognormal_lead_time(rng, self.median_s, self.sigma)
        if rng.random() < self.skip_rate:
            return Answer(None, lead_time)
        return Answer({c: self.choose(opts, task.truth.get(c), rng) for c, opts in task.options.items()}, lead_time)


@dataclass
class Diligent(OneCoin):
    """Reads the guideline and the task: right 92% of the time, takes its time, rarely skips."""

    accuracy: float = 0.92
    skip_rate: float = 0.02
    median_s: float = 14.0
    kind = "diligent"


@dataclass
class Sloppy(OneCoin):
    """Skims: right 65% of the time, quick, skips more."""

    accuracy: float = 0.65
    skip_rate: float = 0.05
    median_s: float = 5.0
    kind = "sloppy"


@dataclass
class Spammer(Profile):
    """Answers uniformly at random, whatever the task (accuracy = 1 / options), in a few seconds."""

    median_s: float = 3.0
    sigma: float = 0.4
    kind = "spammer"

    def answer(self, task: TaskChoices, rng: random.Random) -> Answer:
        lead_time = lognormal_lead_time(rng, self.median_s, self.sigma)
        return Answer({c: rng.choice(list(opts)) for c, opts in task.options.items()}, lead_time)


@dataclass
class Bot(Profile):
    """A script: always the first option, in well under a second (no human reads a task that fast)."""

    low_s: float = 0.3
    high_s: float = 0.8
    kind = "bot"

    def answer(self, task: TaskChoices, rng: random.Random) -> Answer:
        return Answer({c: opts[0] for c, opts in task.options.items()}, round(rng.uniform(self.low_s, self.high_s), 3))


@dataclass
class Copier(Profile):
    """One member of a colluding pair. Both share ``book`` (task -> answer): whoever of the two reaches a task
    first answers it with ``own`` and writes the answer down; the other copies it, quickly."""

    own: OneCoin
    book: dict[int, Mapping[str, str]]
    copy_median_s: float = 2.5
    kind = "colluding"

    def answer(self, task: TaskChoices, rng: random.Random) -> Answer:
        copied = self.book.get(task.task)
        if copied is not None:
            return Answer(dict(copied), lognormal_lead_time(rng, self.copy_median_s, 0.4))
        mine = self.own.answer(task, rng)
        if mine.labels is not None:
            self.book[task.task] = dict(mine.labels)
        return mine


class ColludingPair:
    """Two accounts, one mind: the one who reaches a task first answers it like a sloppy worker (right
    ``accuracy`` of the time), the other copies that answer; each task both see gets the same answer. ``first``
    and ``second`` are the two profiles.

    The shared book is the only state; the simulator runs the two in different threads, and a dict's
    get and set are atomic in CPython, so at worst both answer a task on their own at the same instant."""

    kind = "colluding_pair"

    def __init__(self, accuracy: float = 0.7, median_s: float = 6.0) -> None:
        self.book: dict[int, Mapping[str, str]] = {}
        own = OneCoin(accuracy=accuracy, skip_rate=0.0, median_s=median_s)
        self.first = Copier(own, self.book)
        self.second = Copier(own, self.book)


@dataclass
class ReplayWorker(Profile):
    """A real crowd worker: their recorded label on each item they labelled (``labels``: item -> option of
    ``control``), at their own pace (``median_s``). An item they never labelled is skipped."""

    worker: str
    labels: Mapping[str, str]
    control: str
    median_s: float = 10.0
    sigma: float = 0.6
    kind = "replay"

    def answer(self, task: TaskChoices, rng: random.Random) -> Answer:
        lead_time = lognormal_lead_time(rng, self.median_s, self.sigma)
        label = self.labels.get(task.item) if task.item is not None else None
        if label is None:
            return Answer(None, lead_time)
        return Answer({self.control: label}, lead_time)


PROFILE_KINDS = ("diligent", "sloppy", "spammer", "bot", "colluding_pair")


class ProfileMixError(ValueError):
    """A ``--profiles`` mix that does not read (the message says which part and why)."""


def parse_mix(text: str) -> dict[str, int]:
    """``"diligent=5,sloppy=2,bot=1"`` -> ``{"diligent": 5, "sloppy": 2, "bot": 1}`` (a colluding pair counts
    pairs). Unknown kinds, bad counts and repeats raise :class:`ProfileMixError`."""
    mix: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, sep, count = part.partition("=")
        kind = kind.strip()
        if kind not in PROFILE_KINDS:
            raise ProfileMixError(f"unknown profile {kind!r} in {text!r}: use {', '.join(PROFILE_KINDS)}")
        if kind in mix:
            raise ProfileMixError(f"profile {kind!r} is given twice in {text!r}")
        try:
            number = int(count) if sep else 1
        except ValueError:
            raise ProfileMixError(f"{part!r}: the count after '=' must be a whole number") from None
        if number < 0:
            raise ProfileMixError(f"{part!r}: the count must not be negative")
        mix[kind] = number
    if sum(mix.values()) == 0:
        raise ProfileMixError(f"{text!r} names no annotator: say e.g. diligent=5,sloppy=2")
    return mix


def synthetic_crowd(mix: Mapping[str, int]) -> list[tuple[str, Profile]]:
    """One (name, profile) per simulated annotator, in a stable order: ``diligent-1``, ..., and for each
    colluding pair ``colluding-1a`` and ``colluding-1b`` (who copies ``-1a``)."""
    makers = {"diligent": Diligent, "sloppy": Sloppy, "spammer": Spammer, "bot": Bot}
    crowd: list[tuple[str, Profile]] = []
    for kind in PROFILE_KINDS:
        for i in range(1, mix.get(kind, 0) + 1):
            if kind == "colluding_pair":
                pair = ColludingPair()
                crowd += [(f"colluding-{i}a", pair.first), (f"colluding-{i}b", pair.second)]
            else:
                crowd.append((f"{kind}-{i}", makers[kind]()))
    return crowd
