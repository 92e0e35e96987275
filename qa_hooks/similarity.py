"""Agreement between two Label Studio results for the same task, one score in [0, 1].

A *result* is an annotation's ``result`` list: regions ``{"from_name", "to_name", "type", "value"}``.
Regions are grouped by ``from_name`` (the control tag) and each group is scored by the scorer for the
control's type; :func:`compare_results` combines them with the project's ``control_weights``.

Rules per control type (all scores are in [0, 1], 1 = full agreement):

- ``choices``: single choice → exact match of the selected set; ``choice="multiple"`` → Jaccard.
- ``labels`` (spans on Text): span-level F1. Two spans match when their label sets are equal and
  their character-interval IoU (overlap / union of ``[start, end)``) is ≥ 0.5; spans are paired
  one-to-one by maximum matching (Hungarian), F1 = 2·matches / (spans_a + spans_b).
  Spans without numeric offsets (HyperText xpaths) use ``globalOffsets`` when present, else exact
  position equality.
- ``rectanglelabels`` / ``rectangle``: same F1 with box IoU ≥ 0.5 and equal label sets. Boxes are
  axis-aligned: ``rotation`` is ignored.
- ``polygonlabels`` / ``polygon``: same F1 with exact polygon IoU ≥ 0.5 (no rasterisation, no
  shapely; polygons are assumed simple, i.e. not self-intersecting). Coordinates are percentages
  of the image; IoU is invariant to that scaling so it equals the IoU in pixels.
- ``rating``: 1 − |a − b| / (maxRating − 1), because stars run 1..maxRating (default 5).
- ``number``: 1 − |a − b| / (max − min) from the tag's ``min``/``max``; without both bounds
  1 − |a − b| / max(|a|, |b|). Both clamped to [0, 1].
- ``textarea``: texts joined, whitespace collapsed, then ``rapidfuzz.fuzz.ratio`` / 100
  (normalised Indel similarity). Two empty texts → 1.
- ``pairwise``: exact match of ``selected`` ("left"/"right").
- ``taxonomy``: Jaccard over the set of all path prefixes, so ``A/A1`` vs ``A/A2`` shares ``A``.
- any other type: exact equality of the region values as a multiset (1 or 0), or
  :class:`UnsupportedControlError` with ``on_unknown="error"``.

Controls that emit several regions (``perRegion`` classifications) are compared as one group:
the union of choices / taxonomy paths, the joined text, or the mean rating / number.
Regions without ``from_name`` (relations) are ignored. Per-label weights in ``control_weights``
are ignored; only ``"overall"`` is used.

Empty results and skips (see :func:`compare_results`): a skipped annotation (``was_cancelled``)
is never compared — the functions return ``None`` and callers must leave skips out of any score.
Both results empty → ``both_empty`` (1.0 by default: agreement that there is nothing to label).
A control that one side answered and the other did not scores 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from rapidfuzz import fuzz

from core.label_config import Control, LabelConfig, finite_number

__all__ = [
    "IOU_THRESHOLD",
    "SCORERS",
    "UnsupportedControlError",
    "box_iou",
    "compare_results",
    "per_control",
    "polygon_area",
    "polygon_iou",
    "score_choices",
    "score_exact",
    "score_labels",
    "score_number",
    "score_pairwise",
    "score_polygons",
    "score_rating",
    "score_rectangles",
    "score_taxonomy",
    "score_textarea",
    "span_iou",
]

Region = Mapping[str, Any]
Regions = Sequence[Region]
Point = tuple[float, float]
Config = str | LabelConfig | Mapping[str, Control] | None
OnUnknown = Literal["exact", "error"]
T = TypeVar("T")

IOU_THRESHOLD = 0.5
"""Minimum IoU (inclusive) for two spans / boxes / polygons with the same labels to count as a match."""


class UnsupportedControlError(ValueError):
    """Raised for a control type without a scorer when ``on_unknown="error"``."""


# ---------------------------------------------------------------------------------------------
# Config: the controls come from core.label_config (parsed once per config string and cached)


def _controls(config: Config) -> Mapping[str, Control]:
    """``from_name`` -> :class:`Control` for a config string, a parsed ``LabelConfig``, or a ready mapping."""
    if config is None:
        return {}
    if isinstance(config, str):
        return LabelConfig.parse(config).by_name
    if isinstance(config, LabelConfig):
        return config.by_name
    return config


# ---------------------------------------------------------------------------------------------
# Small helpers


def _jaccard(a: set[Any] | frozenset[Any], b: set[Any] | frozenset[Any]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def _value(region: Region) -> Mapping[str, Any]:
    value = region.get("value")
    return value if isinstance(value, Mapping) else {}


def _collect(regions: Regions, key: str) -> set[Any]:
    out: set[Any] = set()
    for region in regions:
        items = _value(region).get(key)
        if isinstance(items, str):  # tolerate a bare string where a list is expected
            out.add(items)
        elif items:
            out.update(items)
    return out


def _mean_number(regions: Regions, key: str) -> float | None:
    values = [v for v in (finite_number(_value(r).get(key)) for r in regions) if v is not None]
    return sum(values) / len(values) if values else None


def _labels_key(value: Mapping[str, Any], key: str) -> frozenset[str]:
    labels = value.get(key)
    if isinstance(labels, str):
        return frozenset((labels,))
    return frozenset(labels or ())


def _max_matching(n: int, m: int, pairs: dict[tuple[int, int], float]) -> int:
    """Size of a maximum one-to-one matching over admissible ``pairs`` (i, j) → IoU."""
    if not pairs:
        return 0
    if n == 1 or m == 1 or len(pairs) == 1:
        return min(len(pairs), len({i for i, _ in pairs}), len({j for _, j in pairs}))
    import numpy as np  # deferred: only multi-region shape/span results need the assignment solver
    from scipy.optimize import linear_sum_assignment

    # Weight 1 + iou/(k+1): any c-match total lies in [c, c+1), so the optimum has maximum
    # cardinality, and among those, the highest total IoU.
    bonus = 1.0 / (min(n, m) + 1)
    weights = np.zeros((n, m))
    for (i, j), iou in pairs.items():
        weights[i, j] = 1.0 + iou * bonus
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return int(np.count_nonzero(weights[rows, cols]))


def _matched_f1(
    items_a: Sequence[tuple[frozenset[str], T]],
    items_b: Sequence[tuple[frozenset[str], T]],
    iou: Callable[[T, T], float],
) -> float:
    """F1 of a one-to-one matching where a pair counts if labels are equal and IoU ≥ threshold."""
    n, m = len(items_a), len(items_b)
    if n == 0 and m == 0:
        return 1.0
    if n == 0 or m == 0:
        return 0.0
    pairs: dict[tuple[int, int], float] = {}
    for i, (labels_a, geom_a) in enumerate(items_a):
        for j, (labels_b, geom_b) in enumerate(items_b):
            if labels_a != labels_b:
                continue
            overlap = 1.0 if geom_a == geom_b else iou(geom_a, geom_b)
            if overlap >= IOU_THRESHOLD:
                pairs[i, j] = overlap
    return 2.0 * _max_matching(n, m, pairs) / (n + m)


def _range_similarity(a: float, b: float, low: float | None, high: float | None) -> float:
    if low is not None and high is not None:
        if high > low:
            return _clamp01(1.0 - abs(a - b) / (high - low))
        return 1.0 if a == b else 0.0
    scale = max(abs(a), abs(b))  # no range known: relative difference
    return 1.0 if scale == 0.0 else _clamp01(1.0 - abs(a - b) / scale)


# ---------------------------------------------------------------------------------------------
# Geometry


def span_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """IoU of two half-open character intervals ``[start, end)``."""
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    if overlap <= 0.0:
        return 0.0
    union = (a[1] - a[0]) + (b[1] - b[0]) - overlap
    return overlap / union if union > 0.0 else 0.0


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two axis-aligned boxes given as ``(x, y, width, height)``."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0.0 or ih <= 0.0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0.0 else 0.0


def _signed_area(points: Sequence[Point]) -> float:
    total = 0.0
    x0, y0 = points[-1]
    for x1, y1 in points:
        total += x0 * y1 - x1 * y0
        x0, y0 = x1, y1
    return total / 2.0


def polygon_area(points: Sequence[Point]) -> float:
    """Area of a simple polygon (shoelace formula), any orientation."""
    return abs(_signed_area(points)) if len(points) >= 3 else 0.0


def _clip_convex(subject: list[Point], clip: Sequence[Point]) -> list[Point]:
    """Sutherland–Hodgman: part of convex ``subject`` inside convex counter-clockwise ``clip``."""
    out = subject
    for k in range(len(clip)):
        if not out:
            break
        x1, y1 = clip[k]
        x2, y2 = clip[(k + 1) % len(clip)]
        ex, ey = x2 - x1, y2 - y1
        src, out = out, []
        px, py = src[-1]
        p_side = ex * (py - y1) - ey * (px - x1)  # ≥ 0: on the inner (left) side of the edge
        for cx, cy in src:
            c_side = ex * (cy - y1) - ey * (cx - x1)
            if (c_side >= 0.0) != (p_side >= 0.0):
                t = p_side / (p_side - c_side)
                out.append((px + t * (cx - px), py + t * (cy - py)))
            if c_side >= 0.0:
                out.append((cx, cy))
            px, py, p_side = cx, cy, c_side
    return out


def _fan(points: Sequence[Point]) -> list[tuple[list[Point], float, tuple[float, float, float, float]]]:
    """Fan triangles from the first vertex: (counter-clockwise triangle, orientation sign, bbox)."""
    p0 = points[0]
    tris = []
    for k in range(1, len(points) - 1):
        p1, p2 = points[k], points[k + 1]
        cross = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p1[1] - p0[1]) * (p2[0] - p0[0])
        if cross == 0.0:
            continue
        tri = [p0, p1, p2] if cross > 0.0 else [p0, p2, p1]
        xs, ys = (p0[0], p1[0], p2[0]), (p0[1], p1[1], p2[1])
        tris.append((tri, 1.0 if cross > 0.0 else -1.0, (min(xs), min(ys), max(xs), max(ys))))
    return tris


def _polygon_intersection_area(a: Sequence[Point], b: Sequence[Point]) -> float:
    # Each polygon's winding-number function is the signed sum of its fan triangles' indicators,
    # so the integral of their product — ±area(a ∩ b) for simple polygons — is the signed sum of
    # pairwise triangle intersections, and triangles are convex, so clipping them is exact.
    total = 0.0
    fan_b = _fan(b)
    for tri_a, sign_a, (ax0, ay0, ax1, ay1) in _fan(a):
        for tri_b, sign_b, (bx0, by0, bx1, by1) in fan_b:
            if ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0:
                continue
            piece = _clip_convex(tri_a, tri_b)
            if len(piece) >= 3:
                total += sign_a * sign_b * _signed_area(piece)
    return abs(total)


def polygon_iou(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """Exact IoU of two simple polygons given as ``[[x, y], ...]``; degenerate polygons give 0."""
    pa = [(float(p[0]), float(p[1])) for p in a]
    pb = [(float(p[0]), float(p[1])) for p in b]
    area_a, area_b = polygon_area(pa), polygon_area(pb)
    if area_a == 0.0 or area_b == 0.0:
        return 0.0
    # far-apart polygons are the common non-match: skip the O(n·m) clipping
    if (
        max(x for x, _ in pa) <= min(x for x, _ in pb)
        or max(x for x, _ in pb) <= min(x for x, _ in pa)
        or max(y for _, y in pa) <= min(y for _, y in pb)
        or max(y for _, y in pb) <= min(y for _, y in pa)
    ):
        return 0.0
    inter = min(_polygon_intersection_area(pa, pb), area_a, area_b)
    return inter / (area_a + area_b - inter)


# ---------------------------------------------------------------------------------------------
# Scorers: (a_regions, b_regions, control) -> float in [0, 1], for the regions of ONE control


def score_choices(a: Regions, b: Regions, control: Control) -> float:
    """Single choice: 1 if the same choice, else 0. Multiple: Jaccard of the chosen sets."""
    chosen_a, chosen_b = _collect(a, "choices"), _collect(b, "choices")
    if control.multiple:
        return _jaccard(chosen_a, chosen_b)
    return 1.0 if chosen_a == chosen_b else 0.0


def _span_geometry(value: Mapping[str, Any]) -> tuple[float, float] | tuple[Any, ...]:
    start, end = value.get("start"), value.get("end")
    if isinstance(start, int | float) and isinstance(end, int | float):
        return (float(start), float(end))
    offsets = value.get("globalOffsets")
    if isinstance(offsets, Mapping) and "start" in offsets and "end" in offsets:
        return (float(offsets["start"]), float(offsets["end"]))
    # xpath-addressed span (HyperText) without global offsets: only equal positions match
    return ("xpath", start, end, value.get("startOffset"), value.get("endOffset"))


def _span_or_exact_iou(a: tuple[Any, ...], b: tuple[Any, ...]) -> float:
    if len(a) == 2 and len(b) == 2:
        return span_iou((a[0], a[1]), (b[0], b[1]))
    return 1.0 if a == b else 0.0


def score_labels(a: Regions, b: Regions, control: Control) -> float:
    """Span F1: same label set and character IoU ≥ 0.5, one-to-one maximum matching."""
    key = control.type if control.type.endswith("labels") else "labels"
    items_a = [(_labels_key(v, key), _span_geometry(v)) for v in map(_value, a)]
    items_b = [(_labels_key(v, key), _span_geometry(v)) for v in map(_value, b)]
    return _matched_f1(items_a, items_b, _span_or_exact_iou)


def _box(value: Mapping[str, Any]) -> tuple[float, float, float, float]:
    return (
        finite_number(value.get("x"), 0.0) or 0.0,
        finite_number(value.get("y"), 0.0) or 0.0,
        finite_number(value.get("width"), 0.0) or 0.0,
        finite_number(value.get("height"), 0.0) or 0.0,
    )


def score_rectangles(a: Regions, b: Regions, control: Control) -> float:
    """Box F1: same label set and axis-aligned IoU ≥ 0.5 (``rotation`` ignored)."""
    items_a = [(_labels_key(v, "rectanglelabels"), _box(v)) for v in map(_value, a)]
    items_b = [(_labels_key(v, "rectanglelabels"), _box(v)) for v in map(_value, b)]
    return _matched_f1(items_a, items_b, box_iou)


def _points(value: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    return tuple((float(p[0]), float(p[1])) for p in value.get("points") or ())


def score_polygons(a: Regions, b: Regions, control: Control) -> float:
    """Polygon F1: same label set and exact polygon IoU ≥ 0.5."""
    items_a = [(_labels_key(v, "polygonlabels"), _points(v)) for v in map(_value, a)]
    items_b = [(_labels_key(v, "polygonlabels"), _points(v)) for v in map(_value, b)]
    return _matched_f1(items_a, items_b, polygon_iou)


def _score_numeric(a: Regions, b: Regions, control: Control, key: str) -> float:
    value_a, value_b = _mean_number(a, key), _mean_number(b, key)
    if value_a is None or value_b is None:
        return 1.0 if value_a is None and value_b is None else 0.0
    return _range_similarity(value_a, value_b, control.low, control.high)


def score_rating(a: Regions, b: Regions, control: Control) -> float:
    """1 − |a − b| / (maxRating − 1), clamped; stars run from 1 to maxRating."""
    return _score_numeric(a, b, control, "rating")


def score_number(a: Regions, b: Regions, control: Control) -> float:
    """1 − |a − b| / (max − min) from the tag, else relative difference; clamped."""
    return _score_numeric(a, b, control, "number")


def _joined_text(regions: Regions) -> str:
    parts: list[str] = []
    for region in regions:
        text = _value(region).get("text")
        if isinstance(text, str):
            parts.append(text)
        elif text:
            parts.extend(str(t) for t in text)
    return " ".join(" ".join(parts).split())  # whitespace differences are not disagreement


def score_textarea(a: Regions, b: Regions, control: Control) -> float:
    """Normalised Indel similarity (``rapidfuzz.fuzz.ratio`` / 100) of the joined texts."""
    text_a, text_b = _joined_text(a), _joined_text(b)
    if text_a == text_b:
        return 1.0
    return fuzz.ratio(text_a, text_b) / 100.0


def score_pairwise(a: Regions, b: Regions, control: Control) -> float:
    """1 if both picked the same side, else 0."""
    return 1.0 if _collect(a, "selected") == _collect(b, "selected") else 0.0


def _prefixes(regions: Regions) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for region in regions:
        for path in _value(region).get("taxonomy") or ():
            path = tuple(path) if isinstance(path, list | tuple) else (path,)
            out.update(path[: k + 1] for k in range(len(path)))
    return out


def score_taxonomy(a: Regions, b: Regions, control: Control) -> float:
    """Jaccard over the sets of all path prefixes of the selected taxonomy paths."""
    return _jaccard(_prefixes(a), _prefixes(b))


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    return value


def score_exact(a: Regions, b: Regions, control: Control) -> float:
    """Fallback for types without a scorer: 1 if the region values are equal as a multiset."""
    values_a = Counter(_canonical(_value(r)) for r in a)
    return 1.0 if values_a == Counter(_canonical(_value(r)) for r in b) else 0.0


Scorer = Callable[[Regions, Regions, Control], float]

SCORERS: Mapping[str, Scorer] = {
    "choices": score_choices,
    "labels": score_labels,
    "rectanglelabels": score_rectangles,
    "rectangle": score_rectangles,
    "polygonlabels": score_polygons,
    "polygon": score_polygons,
    "rating": score_rating,
    "number": score_number,
    "textarea": score_textarea,
    "pairwise": score_pairwise,
    "taxonomy": score_taxonomy,
}
"""Control type (lower-case tag name / region ``type``) → scorer."""


# ---------------------------------------------------------------------------------------------
# Whole results


def _regions(result: Regions | Mapping[str, Any] | None) -> Regions | None:
    """A result list, or an annotation dict (its ``result``); ``None`` for a skipped annotation."""
    if result is None:
        return ()
    if isinstance(result, Mapping):
        if result.get("was_cancelled"):
            return None
        return result.get("result") or ()
    return result


def _group(regions: Iterable[Region]) -> dict[str, list[Region]]:
    groups: dict[str, list[Region]] = {}
    for region in regions:
        name = region.get("from_name")
        if name is not None:  # relations carry no from_name and are not scored
            groups.setdefault(name, []).append(region)
    return groups


def _score_control(
    name: str,
    a: list[Region] | None,
    b: list[Region] | None,
    controls: Mapping[str, Control],
    on_unknown: OnUnknown,
) -> float:
    if not a or not b:
        return 0.0  # only one side answered this control (both empty never reaches here)
    control = controls.get(name)
    if control is None:  # control not in the config (e.g. config changed): trust the region's type
        control = Control(name=name, type=str(a[0].get("type", "")).lower(), multiple=True)
    scorer = SCORERS.get(control.type)
    if scorer is None:
        if on_unknown == "error":
            raise UnsupportedControlError(
                f"no similarity scorer for control {name!r} of type {control.type!r}; "
                f"supported: {', '.join(sorted(SCORERS))}"
            )
        scorer = score_exact
    return scorer(a, b, control)


def _weight(control_weights: Mapping[str, Any] | None, name: str) -> float:
    if not control_weights:
        return 1.0
    entry = control_weights.get(name)
    if entry is None:
        return 1.0
    raw = entry.get("overall", 1.0) if isinstance(entry, Mapping) else entry
    weight = finite_number(raw)
    if weight is None or weight < 0.0:
        raise ValueError(f"control weight for {name!r} must be a finite number ≥ 0, got {raw!r}")
    return weight


def per_control(
    result_a: Regions | Mapping[str, Any] | None,
    result_b: Regions | Mapping[str, Any] | None,
    label_config: Config,
    *,
    on_unknown: OnUnknown = "exact",
) -> dict[str, float] | None:
    """``from_name`` → score for every control either side answered (weights not applied).

    ``None`` if either side is a skipped annotation; ``{}`` if both results are empty.
    """
    regions_a, regions_b = _regions(result_a), _regions(result_b)
    if regions_a is None or regions_b is None:
        return None
    groups_a, groups_b = _group(regions_a), _group(regions_b)
    controls = _controls(label_config)
    names = list(groups_a) + [n for n in groups_b if n not in groups_a]
    return {n: _score_control(n, groups_a.get(n), groups_b.get(n), controls, on_unknown) for n in names}


def compare_results(
    result_a: Regions | Mapping[str, Any] | None,
    result_b: Regions | Mapping[str, Any] | None,
    label_config: Config,
    control_weights: Mapping[str, Any] | None = None,
    *,
    both_empty: float | None = 1.0,
    on_unknown: OnUnknown = "exact",
) -> float | None:
    """Weighted agreement in [0, 1] between two results for the same task.

    ``result_a``/``result_b``: a result list, or a whole annotation dict (then ``was_cancelled``
    is honoured). ``label_config``: the project's ``label_config`` XML (parsed once and cached), a
    ``core.label_config.LabelConfig``, or a mapping ``from_name`` -> ``Control``.
    ``control_weights``: the project's ``control_weights``; each control counts with its
    ``["overall"]`` weight (default 1.0), and weight 0 leaves it out.

    Returns ``None`` when the pair must not be scored: either annotation was skipped
    (``was_cancelled`` — callers must exclude skips), or every answered control has weight 0.
    Both results empty → ``both_empty`` (1.0 by default; pass ``None`` to not score such pairs).
    """
    regions_a, regions_b = _regions(result_a), _regions(result_b)
    if regions_a is None or regions_b is None:
        return None
    groups_a, groups_b = _group(regions_a), _group(regions_b)
    if not groups_a and not groups_b:
        return both_empty
    controls = _controls(label_config)
    total = weight_sum = 0.0
    for name in list(groups_a) + [n for n in groups_b if n not in groups_a]:
        weight = _weight(control_weights, name)
        if weight == 0.0:
            continue
        total += weight * _score_control(name, groups_a.get(name), groups_b.get(name), controls, on_unknown)
        weight_sum += weight
    if weight_sum == 0.0:
        return None
    return _clamp01(total / weight_sum)
