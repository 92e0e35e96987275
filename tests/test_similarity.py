"""Hand-computed agreement scores for every control type (qa_hooks.similarity)."""

import json
from pathlib import Path
from typing import Any

import pytest

from core.label_config import Control, LabelConfig
from qa_hooks.similarity import (
    SCORERS,
    UnsupportedControlError,
    box_iou,
    compare_results,
    per_control,
    polygon_area,
    polygon_iou,
    score_choices,
    score_labels,
    span_iou,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "labelstudio-1.23.2"


def config(name: str) -> str:
    """The shipped label config of the folder ``label_configs/<name>/``."""
    return (ROOT / "label_configs" / name / "config.xml").read_text()


def region(from_name: str, kind: str, to_name: str = "text", **value: Any) -> dict[str, Any]:
    return {"from_name": from_name, "to_name": to_name, "type": kind, "value": value}


def choice(*values: str, name: str = "sentiment") -> dict[str, Any]:
    return region(name, "choices", choices=list(values))


def span(start: int, end: int, label: str = "PER") -> dict[str, Any]:
    return region("label", "labels", start=start, end=end, text="x" * (end - start), labels=[label])


def box(x: float, y: float, w: float, h: float, label: str = "Car", **extra: Any) -> dict[str, Any]:
    return region(
        "label", "rectanglelabels", "image", x=x, y=y, width=w, height=h, rectanglelabels=[label], **extra
    )


def poly(points: list[list[float]], label: str = "Building") -> dict[str, Any]:
    return region("label", "polygonlabels", "image", points=points, polygonlabels=[label])


def square(x: float, y: float, side: float = 10.0) -> list[list[float]]:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side]]


# --- Choices ------------------------------------------------------------------------------------


def test_single_choice_exact() -> None:
    cfg = config("text_classification")
    assert compare_results([choice("Positive")], [choice("Positive")], cfg) == 1.0
    assert compare_results([choice("Positive")], [choice("Negative")], cfg) == 0.0


def test_rte_choices_use_crowd_labels() -> None:
    cfg = config("rte")
    yes, no = choice("1", name="entailment"), choice("0", name="entailment")
    assert compare_results([yes], [yes], cfg) == 1.0
    assert compare_results([yes], [no], cfg) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (["Sports", "Health"], ["Sports", "Health"], 1.0),
        (["Sports", "Health"], ["Health", "Sports"], 1.0),
        (["Sports"], ["Business"], 0.0),
        (["Sports", "Health"], ["Health", "Politics"], 1 / 3),
        (["Sports"], ["Sports", "Health"], 0.5),
    ],
)
def test_multiple_choice_jaccard(a: list[str], b: list[str], expected: float) -> None:
    cfg = config("multi_label")
    score = compare_results([choice(*a, name="topics")], [choice(*b, name="topics")], cfg)
    assert score == pytest.approx(expected)


def test_scorer_called_directly_with_spec() -> None:
    single = Control(name="sentiment", type="choices")
    multiple = Control(name="sentiment", type="choices", multiple=True)
    a, b = [choice("Positive", "Neutral")], [choice("Positive")]
    assert score_choices(a, b, single) == 0.0
    assert score_choices(a, b, multiple) == 0.5


# --- Labels on text -----------------------------------------------------------------------------


def test_span_iou_values() -> None:
    assert span_iou((0, 10), (0, 10)) == 1.0
    assert span_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert span_iou((0, 10), (0, 5)) == 0.5
    assert span_iou((0, 10), (10, 20)) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([span(0, 10), span(20, 30, "ORG")], [span(0, 10), span(20, 30, "ORG")], 1.0),
        ([span(0, 10), span(20, 30, "ORG")], [span(20, 30, "ORG"), span(0, 10)], 1.0),  # order-free
        ([span(0, 10)], [span(40, 50)], 0.0),
        ([span(0, 10)], [span(0, 10, "ORG")], 0.0),  # same span, other label
        ([span(0, 10)], [span(0, 5)], 1.0),  # IoU exactly 0.5 counts
        ([span(0, 10)], [span(5, 15)], 0.0),  # IoU 1/3 does not
        ([span(0, 10), span(20, 30, "ORG")], [span(0, 10)], 2 / 3),  # 1 match, 2+1 spans
        ([span(0, 10), span(20, 30), span(40, 50)], [span(1, 10), span(60, 70)], 2 / 5),
    ],
)
def test_ner_span_f1(a: list[dict[str, Any]], b: list[dict[str, Any]], expected: float) -> None:
    assert compare_results(a, b, config("ner")) == pytest.approx(expected)


def test_ner_matching_is_optimal_not_greedy() -> None:
    # Greedy would take a1-b1 (IoU 1) and leave a2-b2 (IoU 1/6): F1 0.5. The maximum matching
    # pairs a1-b2 (IoU 0.6) and a2-b1 (IoU 0.5): F1 1.0.
    a = [span(0, 10), span(4, 12)]
    b = [span(0, 10), span(0, 6)]
    assert score_labels(a, b, Control(name="label", type="labels")) == 1.0


# --- Rectangles ---------------------------------------------------------------------------------


def test_box_iou_values() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 20)) == 0.5
    assert box_iou((0, 0, 10, 10), (10, 10, 5, 5)) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([box(10, 10, 20, 20)], [box(10, 10, 20, 20)], 1.0),
        ([box(10, 10, 20, 20)], [box(60, 60, 20, 20)], 0.0),
        ([box(10, 10, 20, 20)], [box(10, 10, 20, 20, "Dog")], 0.0),
        ([box(0, 0, 10, 10)], [box(0, 0, 10, 20)], 1.0),  # IoU 0.5
        ([box(0, 0, 10, 10)], [box(5, 0, 10, 10)], 0.0),  # IoU 1/3
        ([box(0, 0, 10, 10), box(50, 50, 10, 10, "Person")], [box(1, 1, 10, 10)], 2 / 3),
        ([box(10, 10, 20, 20)], [box(10, 10, 20, 20, rotation=30)], 1.0),  # rotation ignored
    ],
)
def test_rectangle_f1(a: list[dict[str, Any]], b: list[dict[str, Any]], expected: float) -> None:
    assert compare_results(a, b, config("image_bbox")) == pytest.approx(expected)


# --- Polygons -----------------------------------------------------------------------------------

L_SHAPE = [[0, 0], [20, 0], [20, 10], [10, 10], [10, 20], [0, 20]]  # area 300, concave


def test_polygon_geometry() -> None:
    assert polygon_area(L_SHAPE) == 300.0
    assert polygon_iou(square(0, 0), square(0, 0)) == 1.0
    assert polygon_iou(square(0, 0), square(0, 0)[::-1]) == pytest.approx(1.0)  # orientation-free
    assert polygon_iou(square(0, 0), square(5, 0)) == pytest.approx(1 / 3)
    assert polygon_iou(L_SHAPE, square(0, 0, 20)) == pytest.approx(0.75)
    assert polygon_iou(L_SHAPE, square(10, 10)) == pytest.approx(0.0)  # sits in the notch
    assert polygon_iou(L_SHAPE, square(5, 5)) == pytest.approx(75 / 325)
    triangle = [[0, 0], [10, 0], [0, 10]]
    assert polygon_iou(triangle, square(0, 0)) == pytest.approx(0.5)
    assert polygon_iou([[0, 0], [1, 1]], square(0, 0)) == 0.0  # degenerate


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([poly(square(10, 10))], [poly(square(10, 10))], 1.0),
        ([poly(square(10, 10))], [poly(square(50, 50))], 0.0),
        ([poly(square(10, 10))], [poly(square(10, 10), "Road")], 0.0),
        ([poly(L_SHAPE)], [poly(square(0, 0, 20))], 1.0),  # IoU 0.75
        ([poly(square(0, 0))], [poly(square(5, 0))], 0.0),  # IoU 1/3
        ([poly(square(0, 0)), poly(square(50, 50))], [poly(square(1, 0))], 2 / 3),
    ],
)
def test_polygon_f1(a: list[dict[str, Any]], b: list[dict[str, Any]], expected: float) -> None:
    assert compare_results(a, b, config("image_polygon")) == pytest.approx(expected)


# --- Rating and Number --------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "expected"), [(5, 5, 1.0), (1, 5, 0.0), (4, 5, 0.75), (3, 5, 0.5)])
def test_rating_uses_max_rating(a: int, b: int, expected: float) -> None:
    def rate(n: int) -> list[dict[str, Any]]:
        return [region("rating", "rating", "text", rating=n)]

    assert compare_results(rate(a), rate(b), config("sentiment_rating")) == pytest.approx(expected)


NUMBER_CFG = """<View>
  <Text name="text" value="$text"/>
  <Number name="bounded" toName="text" min="0" max="10"/>
  <Number name="free" toName="text"/>
</View>"""


@pytest.mark.parametrize(
    ("name", "a", "b", "expected"),
    [
        ("bounded", 2, 7, 0.5),
        ("bounded", 3, 3, 1.0),
        ("bounded", 0, 20, 0.0),  # out of range: clamped
        ("free", 4, 5, 0.8),  # no bounds: relative difference
        ("free", 0, 0, 1.0),
    ],
)
def test_number(name: str, a: float, b: float, expected: float) -> None:
    ra, rb = [region(name, "number", number=a)], [region(name, "number", number=b)]
    assert compare_results(ra, rb, NUMBER_CFG) == pytest.approx(expected)


# --- TextArea, Pairwise, Taxonomy ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (["A short summary."], ["A short summary."], 1.0),
        (["abcd"], ["abce"], 0.75),  # Indel distance 2 over 8 characters
        (["a  summary\n"], ["a summary"], 1.0),  # whitespace only
        (["first part", "second"], ["first part second"], 1.0),  # lists are joined
        (["abc"], ["xyz"], 0.0),
        ([""], ["something"], 0.0),
    ],
)
def test_textarea(a: list[str], b: list[str], expected: float) -> None:
    ra, rb = [region("summary", "textarea", text=a)], [region("summary", "textarea", text=b)]
    assert compare_results(ra, rb, config("text_summary")) == pytest.approx(expected)


def test_pairwise() -> None:
    def pick(side: str) -> list[dict[str, Any]]:
        return [region("preference", "pairwise", "preference", selected=side)]

    cfg = config("pairwise")
    assert compare_results(pick("left"), pick("left"), cfg) == 1.0
    assert compare_results(pick("left"), pick("right"), cfg) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([["Electronics", "Audio", "Headphones"]], [["Electronics", "Audio", "Headphones"]], 1.0),
        ([["Electronics", "Audio", "Headphones"]], [["Electronics", "Audio", "Speakers"]], 0.5),
        ([["Electronics", "Phones"]], [["Electronics", "Phones"], ["Home"]], 2 / 3),
        ([["Electronics"]], [["Home", "Kitchen"]], 0.0),
    ],
)
def test_taxonomy_prefix_jaccard(a: list[list[str]], b: list[list[str]], expected: float) -> None:
    ra, rb = [region("taxonomy", "taxonomy", taxonomy=a)], [region("taxonomy", "taxonomy", taxonomy=b)]
    assert compare_results(ra, rb, config("taxonomy")) == pytest.approx(expected)


# --- Several controls, weights ------------------------------------------------------------------

MULTI_CFG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/></Choices>
  <Rating name="quality" toName="text" maxRating="5"/>
  <TextArea name="comment" toName="text"/>
</View>"""


def _multi(sentiment: str, stars: int, comment: str | None = None) -> list[dict[str, Any]]:
    result = [choice(sentiment), region("quality", "rating", rating=stars)]
    if comment is not None:
        result.append(region("comment", "textarea", text=[comment]))
    return result


def test_per_control_and_unweighted_mean() -> None:
    a, b = _multi("Positive", 5), _multi("Negative", 4)
    assert per_control(a, b, MULTI_CFG) == {"sentiment": 0.0, "quality": 0.75}
    assert compare_results(a, b, MULTI_CFG) == pytest.approx(0.375)


def test_control_weights() -> None:
    a, b = _multi("Positive", 5), _multi("Negative", 4)
    weights = {
        "sentiment": {"overall": 3.0, "type": "Choices", "labels": {"Positive": 1.0, "Negative": 1.0}},
        "quality": {"overall": 1.0, "type": "Rating", "labels": {}},
    }
    assert compare_results(a, b, MULTI_CFG, weights) == pytest.approx(0.75 / 4)
    weights["sentiment"]["overall"] = 0.0  # weight 0 leaves the control out
    assert compare_results(a, b, MULTI_CFG, weights) == pytest.approx(0.75)
    weights["quality"]["overall"] = 0.0
    assert compare_results(a, b, MULTI_CFG, weights) is None  # nothing left to compare
    assert compare_results(a, b, MULTI_CFG, {"quality": {"overall": 2.0}}) == pytest.approx(1.5 / 3)


def test_negative_weight_rejected() -> None:
    with pytest.raises(ValueError, match="quality"):
        compare_results(_multi("Positive", 5), _multi("Positive", 5), MULTI_CFG, {"quality": {"overall": -1}})


def test_control_answered_by_one_side_scores_zero() -> None:
    a, b = _multi("Positive", 5, comment="nice"), _multi("Positive", 5)
    assert per_control(a, b, MULTI_CFG) == {"sentiment": 1.0, "quality": 1.0, "comment": 0.0}
    assert compare_results(a, b, MULTI_CFG) == pytest.approx(2 / 3)


# --- Empty results and skips --------------------------------------------------------------------


def test_empty_results() -> None:
    cfg = config("text_classification")
    assert compare_results([], [], cfg) == 1.0
    assert compare_results(None, [], cfg) == 1.0
    assert compare_results([], [], cfg, both_empty=None) is None
    assert compare_results([choice("Positive")], [], cfg) == 0.0
    assert compare_results([], [choice("Positive")], cfg) == 0.0
    assert per_control([], [], cfg) == {}


def test_relations_are_ignored() -> None:
    relation = {"from_id": "a", "to_id": "b", "type": "relation", "direction": "right"}
    cfg = config("ner")
    assert compare_results([span(0, 10), relation], [span(0, 10)], cfg) == 1.0
    assert compare_results([relation], [], cfg) == 1.0  # nothing scorable on either side


def test_skips_are_not_compared() -> None:
    cfg = config("text_classification")
    done = {"result": [choice("Positive")], "was_cancelled": False}
    skipped = {"result": [], "was_cancelled": True}
    assert compare_results(done, done, cfg) == 1.0
    assert compare_results(done, skipped, cfg) is None
    assert compare_results(skipped, skipped, cfg) is None
    assert per_control(skipped, done, cfg) is None


# --- Unknown types, config forms, real payload --------------------------------------------------

DATETIME_CFG = """<View>
  <Text name="text" value="$text"/>
  <DateTime name="when" toName="text" only="date"/>
</View>"""


def test_unknown_control_type_falls_back_to_exact_equality() -> None:
    assert "datetime" not in SCORERS
    a = [region("when", "datetime", datetime="2024-01-02")]
    b = [region("when", "datetime", datetime="2024-01-03")]
    assert compare_results(a, a, DATETIME_CFG) == 1.0
    assert compare_results(a, b, DATETIME_CFG) == 0.0
    with pytest.raises(UnsupportedControlError, match=r"'when'.*'datetime'"):
        compare_results(a, b, DATETIME_CFG, on_unknown="error")


def test_control_missing_from_config_uses_region_type() -> None:
    cfg = config("text_classification")
    a = [choice("Positive"), choice("x", "y", name="legacy")]
    b = [choice("Positive"), choice("y", name="legacy")]
    assert per_control(a, b, cfg) == {"sentiment": 1.0, "legacy": 0.5}


def test_config_forms_agree() -> None:
    cfg = config("multi_label")
    a, b = [choice("Sports", "Health", name="topics")], [choice("Health", name="topics")]
    parsed = LabelConfig.parse(cfg)
    by_name = {"topics": Control(name="topics", type="choices", multiple=True)}
    scores = {compare_results(a, b, form) for form in (cfg, parsed, parsed.by_name, by_name)}
    assert scores == {0.5}


def test_captured_webhook_payload() -> None:
    body = json.loads((FIXTURES / "webhook_annotation_created.json").read_text())
    project, annotation = body["project"], body["annotation"]
    other = {**annotation, "result": [choice("Negative")]}
    args = (project["label_config"], project["control_weights"])
    assert compare_results(annotation, annotation, *args) == 1.0
    assert compare_results(annotation, other, *args) == 0.0
