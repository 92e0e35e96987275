"""Copying free text: near-identical TextArea answers on different tasks, or copied from another annotator on the
same task (pure).

Texts are compared as sets of character 4-shingles through MinHash signatures (Broder, "On the resemblance and
containment of documents", 1997; ``datasketch``), near-identical meaning an estimated Jaccard similarity of at
least ``threshold``. Honest free text repeats sometimes (a stock phrase): the project's own rates are the
honest bounds, each at least ``floor``; the tests are one-sided binomial. Texts under ``min_chars`` characters
("ok", "none") are not judged.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from datasketch import MinHash

from qa_hooks.fraud.evidence import Answer, Evidence, binomial_excess

__all__ = ["TextCopying", "minhash"]

_SPACE = re.compile(r"\s+")
_TEMPLATES: dict[int, MinHash] = {}


def minhash(text: str, num_perm: int = 64, k: int = 4) -> MinHash:
    """MinHash signature of ``text``'s character ``k``-shingles (case and spacing folded)."""
    norm = _SPACE.sub(" ", text.lower()).strip()
    template = _TEMPLATES.get(num_perm)
    if template is None:
        template = _TEMPLATES[num_perm] = MinHash(num_perm=num_perm, seed=1)
    sig = MinHash(num_perm=num_perm, seed=1, permutations=template.permutations)  # drawing them is the slow part
    sig.update_batch(norm[i:i + k].encode() for i in range(max(len(norm) - k + 1, 1)))
    return sig


class TextCopying:
    """Near-duplicate free text. Fitted attributes: ``self_rate_`` (honest share of an annotator's texts that
    repeat one of their own on another task), ``cross_rate_`` (share near-identical to another annotator's text
    on the same task)."""

    name = "copies_text"

    def __init__(self, threshold: float = 0.8, min_chars: int = 12, min_texts: int = 3, floor: float = 0.02,
                 slack: float = 0.03, window: int = 200) -> None:
        self.threshold = threshold
        self.min_chars = min_chars
        self.min_texts = min_texts
        self.floor = floor
        self.slack = slack
        self.window = window

    def _texts(self, answers: Sequence[Answer]) -> list[tuple[Any, MinHash]]:
        out = []
        for a in answers[-self.window:]:
            if a.text and len(a.text.strip()) >= self.min_chars:
                sig = self._cache.get(a.text)
                if sig is None:
                    sig = self._cache[a.text] = minhash(a.text)
                out.append((a.task, sig))
        return out

    def _self_repeats(self, texts: list[tuple[Any, MinHash]]) -> int:
        """How many of the texts near-copy another of the same annotator's on a different task (the estimated
        Jaccard similarity of two MinHash signatures is the share of their equal hash values)."""
        if len(texts) < 2:
            return 0
        sigs = np.stack([sig.hashvalues for _, sig in texts])
        similar = (sigs[:, None, :] == sigs[None, :, :]).mean(axis=2) >= self.threshold
        tasks = np.array([str(t) for t, _ in texts])
        similar &= tasks[:, None] != tasks[None, :]
        return int(similar.any(axis=1).sum())

    def _cross(self, annotator: Any, texts: list[tuple[Any, MinHash]]) -> tuple[int, Any]:
        copied, partner = 0, None
        for task, sig in texts:
            for other, other_sig in self.by_task_.get(task, ()):
                if other != annotator and sig.jaccard(other_sig) >= self.threshold:
                    copied += 1
                    partner = other
                    break
        return copied, partner

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> TextCopying:
        self._cache: dict[str, MinHash] = {}
        texts = {a: self._texts(answers) for a, answers in answers_by_annotator.items()}
        self.by_task_: dict[Any, list[tuple[Any, MinHash]]] = {}
        for annotator, items in texts.items():
            for task, sig in items:
                self.by_task_.setdefault(task, []).append((annotator, sig))
        self_shares, cross_shares = [], []
        for annotator, items in texts.items():
            if len(items) >= self.min_texts:
                self_shares.append(self._self_repeats(items) / len(items))
                cross_shares.append(self._cross(annotator, items)[0] / len(items))
        self.self_rate_ = min(max(statistics.median(self_shares) if self_shares else 0.0, self.floor) + self.slack,
                              0.9)
        self.cross_rate_ = min(max(statistics.median(cross_shares) if cross_shares else 0.0, self.floor)
                               + self.slack, 0.9)
        self.fitted_ = bool(self_shares)
        return self

    def assess(self, answers: Sequence[Answer], annotator: Any = None) -> Evidence | None:
        if not getattr(self, "fitted_", False):
            return None
        texts = self._texts(answers)
        if len(texts) < self.min_texts:
            return None
        repeats = self._self_repeats(texts)
        copied, partner = self._cross(annotator, texts)
        p_self = binomial_excess(repeats, len(texts), self.self_rate_)
        p_cross = binomial_excess(copied, len(texts), self.cross_rate_)
        p = min(1.0, 2 * min(p_self, p_cross))
        if p_self <= p_cross:
            reason = (f"{repeats} of {len(texts)} free-text answers are near-copies of their own answers on other "
                      f"tasks; {self.self_rate_ - self.slack:.0%} is usual here")
        else:
            reason = (f"{copied} of {len(texts)} free-text answers are near-copies of another annotator's answer on "
                      f"the same task (last: annotator {partner})")
        return Evidence(self.name, p, reason, {"texts": len(texts), "self_repeats": repeats,
                                              "copied_from_others": copied, "partner": partner})
