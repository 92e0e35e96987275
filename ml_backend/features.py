"""Task text extraction from Label Studio tasks and cheap hand-made text features.

The embedded models (``classifier.py``, ``difficulty.py``) see a task as the ordered list of strings its
label config shows: the data keys of the Text-like object tags (``<Text value="$text">`` → ``text``), as
``core.label_config`` reads them.
Two or more texts make a *pair* task (premise = first, hypothesis = the rest), which gets lexical-overlap
features: on RTE these track worker disagreement better than embeddings do (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from core.label_config import LabelConfig

_TAG_RE = re.compile(r"<[^>]+>")
_SPACE_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")

# Short English function-word list: enough to separate content words from glue.
_STOPWORD_TEXT = """
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more
most my myself no nor not of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves s t
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
NEGATIONS = frozenset({"no", "not", "never", "none", "nobody", "nothing", "neither", "nor", "without"})


@dataclass(frozen=True)
class ChoiceControl:
    """One ``<Choices>`` control: the values a result may carry and whether several may be picked."""

    name: str
    to_name: str
    choices: tuple[str, ...]
    multiple: bool


@dataclass(frozen=True)
class TaskSchema:
    """What the embedded models need from a label config."""

    fields: tuple[str, ...]
    choice_controls: tuple[ChoiceControl, ...]

    @property
    def control(self) -> ChoiceControl | None:
        """The first Choices control: the one the embedded classifier predicts."""
        return self.choice_controls[0] if self.choice_controls else None


class NotTrainedError(RuntimeError):
    """The model has not been fitted (too little data so far): the caller falls back on something else."""


@lru_cache(maxsize=256)
def task_schema(label_config: str) -> TaskSchema:
    """Text data keys (in config order) and Choices controls of a Label Studio label config."""
    config = LabelConfig.parse(label_config)
    controls = tuple(
        ChoiceControl(name=c.name, to_name=(c.to_name or ("",))[0], choices=c.labels, multiple=c.multiple)
        for c in config.controls
        if c.type == "choices"
    )
    return TaskSchema(fields=config.text_fields, choice_controls=controls)


def clean_text(value: Any) -> str:
    """Plain text from a task data value: HTML stripped, Paragraphs lists joined, whitespace collapsed."""
    if value is None:
        return ""
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, Mapping):
                # Paragraphs items are dicts; textKey defaults to "text".
                parts.append(clean_text(item.get("text", " ".join(str(v) for v in item.values()))))
            else:
                parts.append(clean_text(item))
        return " ".join(p for p in parts if p)
    text = str(value)
    if "<" in text:
        text = _TAG_RE.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return _SPACE_RE.sub(" ", text).strip()


def task_data(task: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept either a full Label Studio task (with ``data``) or its ``data`` dict."""
    data = task.get("data")
    return data if isinstance(data, Mapping) else task


def task_texts(task: Mapping[str, Any], fields: Sequence[str]) -> list[str]:
    """The task's texts in field order (missing keys give "")."""
    data = task_data(task)
    if not fields:
        # No Text object found: fall back on every string value so something still gets embedded.
        return [" ".join(clean_text(v) for v in data.values() if isinstance(v, str))]
    return [clean_text(data.get(field)) for field in fields]


def as_pair(texts: Sequence[str]) -> tuple[str, str]:
    """(premise, hypothesis): the first text against the rest joined."""
    return texts[0], " ".join(t for t in texts[1:] if t)


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-able training data, for model versions."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str, ensure_ascii=False).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:10]


# ---- hand-made text features ------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text)


def _content(words: Sequence[str]) -> set[str]:
    return {w.lower() for w in words if w.lower() not in STOPWORDS}


def _bigrams(words: Sequence[str]) -> set[tuple[str, str]]:
    lowered = [w.lower() for w in words]
    return set(itertools.pairwise(lowered))


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


LENGTH_FEATURE_NAMES = ("log_chars", "log_words", "log_words_first", "log_words_last")
PAIR_FEATURE_NAMES = (
    "new_content_share",
    "new_content_count",
    "new_capitalised_count",
    "new_number_count",
    "bigram_overlap",
    "content_jaccard",
    "length_ratio",
    "negation_mismatch",
)
FEATURE_NAMES = LENGTH_FEATURE_NAMES + PAIR_FEATURE_NAMES


def length_features(texts: Sequence[str]) -> np.ndarray:
    """Length-only features (the baseline in ``bench/difficulty.py``)."""
    joined = " ".join(texts)
    first = _words(texts[0]) if texts else []
    last = _words(texts[-1]) if texts else []
    return np.array(
        [
            math.log1p(len(joined)),
            math.log1p(len(_words(joined))),
            math.log1p(len(first)),
            math.log1p(len(last)),
        ],
        dtype=np.float64,
    )


def pair_features(premise: str, hypothesis: str) -> np.ndarray:
    """How much of the hypothesis the premise already covers (all zero when there is no hypothesis)."""
    p_words, h_words = _words(premise), _words(hypothesis)
    if not h_words:
        return np.zeros(len(PAIR_FEATURE_NAMES))
    p_lower = {w.lower() for w in p_words}
    p_content, h_content = _content(p_words), _content(h_words)
    new_content = h_content - p_content
    # Capitalised words past the first position are mostly names: a new name is a strong contradiction cue.
    new_caps = {w for w in h_words[1:] if w[0].isupper() and w.lower() not in p_lower}
    new_numbers = {w for w in h_words if w[0].isdigit() and w not in p_words}
    h_bigrams = _bigrams(h_words)
    p_negated = bool(NEGATIONS & p_lower)
    h_negated = bool(NEGATIONS & {w.lower() for w in h_words})
    return np.array(
        [
            _share(len(new_content), len(h_content)),
            math.log1p(len(new_content)),
            math.log1p(len(new_caps)),
            math.log1p(len(new_numbers)),
            _share(len(h_bigrams & _bigrams(p_words)), len(h_bigrams)),
            _share(len(h_content & p_content), len(h_content | p_content)),
            math.log((len(h_words) + 1) / (len(p_words) + 1)),
            float(p_negated != h_negated),
        ],
        dtype=np.float64,
    )


def text_features(texts: Sequence[str]) -> np.ndarray:
    """Length features then pair-overlap features (zeros for single-text tasks); see ``FEATURE_NAMES``."""
    pair = pair_features(*as_pair(texts)) if len(texts) >= 2 else np.zeros(len(PAIR_FEATURE_NAMES))
    return np.concatenate([length_features(texts), pair])


def feature_matrix(task_text_lists: Sequence[Sequence[str]]) -> np.ndarray:
    if not task_text_lists:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.vstack([text_features(t) for t in task_text_lists])


# ---- embeddings ---------------------------------------------------------------------------------------

Embedder = Callable[[Sequence[str]], np.ndarray]


class EmbeddingCache:
    """Bounded text → vector memo, so the classifier and the difficulty model embed a task once."""

    def __init__(self, max_items: int = 20_000) -> None:
        self.max_items = max_items
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()

    def embed(self, texts: Sequence[str], embedder: Embedder | None = None) -> np.ndarray:
        if embedder is None:
            from ml_backend.embeddings import embed as embedder
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            fresh = embedder(missing)
            with self._lock:
                for text, vector in zip(missing, fresh, strict=True):
                    self._vectors[text] = vector
        with self._lock:
            rows = []
            for text in texts:
                # A concurrent caller may have evicted it meanwhile; re-embedding is the rare fallback.
                vector = self._vectors.get(text)
                if vector is None:
                    vector = embedder([text])[0]
                else:
                    self._vectors.move_to_end(text)
                rows.append(vector)
            while len(self._vectors) > self.max_items:
                self._vectors.popitem(last=False)
        if not rows:
            return np.zeros((0, 384), dtype=np.float32)
        return np.vstack(rows).astype(np.float32, copy=False)


DEFAULT_CACHE = EmbeddingCache()


def embed_texts(texts: Sequence[str], embedder: Embedder | None = None) -> np.ndarray:
    """MiniLM embeddings through the process-wide cache; a custom ``embedder`` bypasses the cache."""
    if embedder is not None:
        # The cache is keyed by text alone, so it may only ever hold vectors of the default model.
        vectors = embedder(list(texts)) if texts else np.zeros((0, 384))
        return np.asarray(vectors, dtype=np.float32)
    return DEFAULT_CACHE.embed(texts)


def task_embedding(task_text_lists: Sequence[Sequence[str]], embedder: Embedder | None = None) -> np.ndarray:
    """One row per task: the text's embedding, or for pair tasks [p, h, p*h, |p-h|] (NLI-style)."""
    if not task_text_lists:
        return np.zeros((0, 384), dtype=np.float32)
    pairs = [len(t) >= 2 for t in task_text_lists]
    if any(pairs) != all(pairs):
        raise ValueError("tasks mix single-text and pair layouts")
    if not pairs[0]:
        return embed_texts([t[0] if t else "" for t in task_text_lists], embedder)
    premises, hypotheses = zip(*(as_pair(t) for t in task_text_lists), strict=True)
    both = embed_texts(list(premises) + list(hypotheses), embedder)
    p, h = both[: len(premises)], both[len(premises) :]
    return np.hstack([p, h, p * h, np.abs(p - h)]).astype(np.float32, copy=False)
