"""Every shipped label config (``label_configs/<type>/config.xml``) parses with the Label Studio SDK and is
usable."""

from pathlib import Path

import pytest
from label_studio_sdk.label_interface import LabelInterface

CONFIG_DIR = Path(__file__).resolve().parent.parent / "label_configs"
CONFIGS = sorted(CONFIG_DIR.glob("*/config.xml"))

EXPECTED = {
    "text_classification": {"sentiment": "Choices"},
    "multi_label": {"topics": "Choices"},
    "ner": {"label": "Labels"},
    "sentiment_rating": {"rating": "Rating"},
    "pairwise": {"preference": "Pairwise"},
    "text_summary": {"summary": "TextArea"},
    "image_bbox": {"label": "RectangleLabels"},
    "image_polygon": {"label": "PolygonLabels"},
    "taxonomy": {"taxonomy": "Taxonomy"},
    "rte": {"entailment": "Choices"},
    "rlhf_pairwise": {"preference": "Pairwise", "strength": "Choices", "rationale": "TextArea"},
    "chat_rating": {"helpfulness": "Rating", "issues": "Choices"},
    "transcription": {"transcript": "TextArea"},
    "content_moderation": {"verdict": "Choices", "categories": "Choices"},
}


def _load(name: str) -> LabelInterface:
    """The SDK's reading of the folder ``label_configs/<name>/``'s config."""
    return LabelInterface((CONFIG_DIR / name / "config.xml").read_text())


def test_all_expected_configs_exist() -> None:
    assert {p.parent.name for p in CONFIGS} >= set(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_config_parses_and_validates(path: Path) -> None:
    li = LabelInterface(path.read_text())
    li.validate()  # schema, unique names, toName targets
    assert len(list(li.controls)) >= 1
    assert len(list(li.objects)) >= 1
    for control in li.controls:
        for target in control.to_name:
            assert target in {o.name for o in li.objects}


@pytest.mark.parametrize(("name", "controls"), sorted(EXPECTED.items()))
def test_control_names_and_types(name: str, controls: dict[str, str]) -> None:
    li = _load(name)
    assert {c.name: c.tag for c in li.controls} == controls


def test_multi_label_is_multiple_choice() -> None:
    assert _load("multi_label").get_control("topics").attr["choice"] == "multiple"
    assert _load("text_classification").get_control("sentiment").attr["choice"] == "single"


def test_rte_stores_crowd_labels() -> None:
    li = _load("rte")
    assert li.get_control("entailment").labels == ["1", "0"]
    assert {o.value for o in li.objects} == {"$text", "$hypothesis"}
    region = {"from_name": "entailment", "to_name": "text", "type": "choices", "value": {"choices": ["1"]}}
    assert li.validate_prediction({"result": [region]}, return_errors=True) == []
    shown = {**region, "value": {"choices": ["Entailment"]}}
    assert li.validate_prediction({"result": [shown]}, return_errors=True) != []


def test_rating_and_taxonomy_details() -> None:
    assert _load("sentiment_rating").get_control("rating").attr["maxRating"] == "5"
    labels = _load("taxonomy").get_control("taxonomy").labels
    assert {"Electronics", "Audio", "Headphones"} <= set(labels)
