"""Near-duplicate tasks, found before an import: exact after normalisation, then by shingle Jaccard similarity.

A crowd that labels the same text twice pays twice and, worse, lets a gold item leak through its duplicate.
:class:`NearDuplicates` groups texts in two passes:

1. exact: equal after case folding, removing punctuation and collapsing whitespace;
2. near: the Jaccard resemblance of their sets of character ``k``-shingles (Broder 1997, "On the resemblance
   and containment of documents") at or above ``threshold`` in every data field (a task's fields are compared
   one by one: RTE reuses a premise with several hypotheses, and those are different tasks). Shingles are hashed
   into sparse binary matrices with scikit-learn's ``HashingVectorizer``; prefix filtering on the longest field
   gives the candidate pairs (exact: no pair at or above the threshold is missed), one sparse product per block
   so memory stays bounded, and every field is scored on those pairs only. Exact for the hashed shingles (no
   MinHash sampling error); its cost grows with the pairs whose rare shingles meet (bench/duplicates.py).

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer

__all__ = ["DuplicateGroup", "NearDuplicates", "normalise", "task_fields"]

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case-folded, punctuation removed, whitespace collapsed (NFKC first, so look-alike forms compare equal)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in folded)
    return _SPACE.sub(" ", kept).strip()


def task_fields(data: Mapping[str, Any], keys: Sequence[str] | None = None) -> tuple[str, ...]:
    """The texts a task shows, one per data field in ``keys`` (default: its own keys, sorted); a missing field is
    empty, a list or object its ``repr``. Compared field by field, so two tasks sharing a long premise but not
    their hypothesis are not duplicates."""
    out = []
    for key in sorted(data) if keys is None else keys:
        value = data.get(key, "")
        out.append(value if isinstance(value, str) else "" if value is None else
                   str(value) if isinstance(value, int | float) else repr(value))
    return tuple(out)


@dataclass(frozen=True)
class DuplicateGroup:
    """Indices of texts that duplicate each other: ``keep`` (the first) and the ``others``; ``kind`` is
    ``exact`` when all are equal after normalisation, else ``near``; ``similarity`` the lowest Jaccard of an
    other to the group (1.0 for exact)."""

    keep: int
    others: tuple[int, ...]
    kind: str
    similarity: float


@dataclass
class NearDuplicates:
    """Group duplicate texts (see the module docstring). ``threshold``: Jaccard of ``shingle``-character shingles
    at or above which two texts are near-duplicates; texts shorter than a shingle compare exactly only."""

    threshold: float = 0.7
    shingle: int = 5
    n_features: int = 2**20
    block: int = 2048
    groups_: list[DuplicateGroup] = field(init=False, default_factory=list)

    def fit(self, texts: Sequence[str | Sequence[str]]) -> NearDuplicates:
        """``texts``: one string per task, or one tuple of field texts per task (all of one length)."""
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        rows = [(t,) if isinstance(t, str) else tuple(t) for t in texts]
        normal = [tuple(normalise(f) for f in row) for row in rows]
        parent = list(range(len(rows)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        def join(i: int, j: int) -> None:
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the earliest text stays the one kept

        first: dict[tuple[str, ...], int] = {}
        for i, fields in enumerate(normal):
            join(first.setdefault(fields, i), i)
        best = np.ones(len(rows))  # lowest similarity that joined each text
        representatives = sorted(set(first.values()))
        if len(representatives) > 1:
            for a, b, sim in self._near_pairs([normal[i] for i in representatives]):
                i, j = representatives[a], representatives[b]
                join(i, j)
                best[j] = min(best[j], sim)
        members: dict[int, list[int]] = {}
        for i in range(len(rows)):
            members.setdefault(root(i), []).append(i)
        self.groups_ = []
        for keep, group in sorted(members.items()):
            if len(group) < 2:
                continue
            exact = all(normal[i] == normal[keep] for i in group)
            similarity = 1.0 if exact else float(min(best[first[normal[i]]] for i in group if i != keep))
            self.groups_.append(DuplicateGroup(keep, tuple(i for i in group if i != keep),
                                               "exact" if exact else "near", round(similarity, 3)))
        return self

    def _shingles(self, text: str) -> list[str]:
        # A text shorter than a shingle is its own single shingle (so short fields compare by equality).
        k = self.shingle
        return [text[i:i + k] for i in range(len(text) - k + 1)] if len(text) >= k else [text]

    def _near_pairs(self, rows: list[tuple[str, ...]]) -> list[tuple[int, int, float]]:
        """(a, b, Jaccard) of the pairs whose every field's Jaccard is >= threshold (the minimum over fields).

        Candidates come from the longest field by prefix filtering (Chaudhuri, Ganti & Kaushik 2006, "A primitive
        operator for similarity joins in data cleaning"): with shingles ordered rarest first, two sets of Jaccard
        >= t share a shingle among the first ``n - ceil(t n) + 1`` of either, so common shingles ("the ", " of t")
        never make candidates. Candidates are then scored exactly, field by field."""
        width = len(rows[0])
        vectorizer = HashingVectorizer(analyzer=self._shingles, n_features=self.n_features, binary=True,
                                       norm=None, alternate_sign=False)
        matrices = [vectorizer.transform([r[f] if f < len(r) else "" for r in rows]).tocsr() for f in range(width)]
        for matrix in matrices:
            matrix.sort_indices()
        sizes = [np.asarray(m.sum(axis=1)).ravel() for m in matrices]
        lead = max(range(width), key=lambda f: sum(len(r[f]) for r in rows if f < len(r)))
        a, b = self._candidates(matrices[lead], sizes[lead])
        found: list[tuple[int, int, float]] = []
        for start in range(0, len(a), 50_000):  # bounded memory for the row products
            ca, cb = a[start:start + 50_000], b[start:start + 50_000]
            similarity = np.ones(len(ca))
            for f in sorted(range(width), key=lambda f: f != lead):
                if not len(ca):
                    break
                inter = np.asarray(matrices[f][ca].multiply(matrices[f][cb]).sum(axis=1)).ravel()
                similarity = np.minimum(similarity, inter / np.maximum(sizes[f][ca] + sizes[f][cb] - inter, 1))
                keep = similarity >= self.threshold
                ca, cb, similarity = ca[keep], cb[keep], similarity[keep]
            found.extend(zip(ca.tolist(), cb.tolist(), similarity.tolist(), strict=True))
        return found

    def _candidates(self, matrix: Any, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (a < b) whose prefixes (rarest shingles first) share a shingle."""
        frequency = np.asarray((matrix > 0).sum(axis=0)).ravel()
        rows, cols = [], []
        for i in range(matrix.shape[0]):
            columns = matrix.indices[matrix.indptr[i]:matrix.indptr[i + 1]]
            n = len(columns)
            if n == 0:
                continue
            prefix = n - math.ceil(self.threshold * n - 1e-9) + 1
            rarest = columns[np.lexsort((columns, frequency[columns]))[:prefix]]
            rows.append(np.full(len(rarest), i))
            cols.append(rarest)
        if not rows:
            return np.array([], dtype=int), np.array([], dtype=int)
        prefixes = sparse.csr_matrix((np.ones(sum(len(r) for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
                                     shape=matrix.shape)
        pairs_a, pairs_b = [], []
        transposed = prefixes.T.tocsc()
        for start in range(0, matrix.shape[0], self.block):
            overlap = (prefixes[start:start + self.block] @ transposed).tocoo()
            a, b = overlap.row + start, overlap.col
            upper = b > a
            pairs_a.append(a[upper])
            pairs_b.append(b[upper])
        return np.concatenate(pairs_a), np.concatenate(pairs_b)

    def predict(self, texts: Sequence[str]) -> list[int]:
        """For each text, the index of the text it duplicates (itself when it is unique or kept)."""
        self.fit(texts)
        kept = list(range(len(texts)))
        for group in self.groups_:
            for other in group.others:
                kept[other] = group.keep
        return kept
