"""core.label_config: the one label-config reader, checked on every shipped config and against the SDK itself."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from label_studio_sdk.label_interface import LabelInterface

from core.label_config import Control, DataObject, LabelConfig, LabelConfigError, Option

CONFIG_DIR = Path(__file__).resolve().parent.parent / "label_configs"
CONFIGS = sorted(CONFIG_DIR.glob("*/config.xml"))


def load(name: str) -> LabelConfig:
    """The shipped config of the folder ``label_configs/<name>/``."""
    return LabelConfig.parse((CONFIG_DIR / name / "config.xml").read_text())


# name -> {control: (type, multiple, labels, to_name, text keys it reads)}, and the config's text fields
EXPECTED: dict[str, tuple[dict[str, tuple[str, bool, tuple[str, ...], tuple[str, ...], tuple[str, ...]]],
                          tuple[str, ...]]] = {
    "text_classification": (
        {"sentiment": ("choices", False, ("Positive", "Negative", "Neutral"), ("text",), ("text",))}, ("text",)),
    "multi_label": (
        {"topics": ("choices", True, ("Politics", "Business", "Sports", "Technology", "Health", "Entertainment"),
                    ("text",), ("text",))}, ("text",)),
    "ner": ({"label": ("labels", False, ("PER", "ORG", "LOC", "MISC"), ("text",), ("text",))}, ("text",)),
    "sentiment_rating": ({"rating": ("rating", False, (), ("text",), ("text",))}, ("text",)),
    "pairwise": (
        {"preference": ("pairwise", False, (), ("left", "right"), ("left", "right"))}, ("prompt", "left", "right")),
    "text_summary": ({"summary": ("textarea", False, (), ("text",), ("text",))}, ("text",)),
    "image_bbox": ({"label": ("rectanglelabels", False, ("Person", "Car", "Bicycle", "Dog"), ("image",), ())}, ()),
    "image_polygon": (
        {"label": ("polygonlabels", False, ("Building", "Road", "Vegetation", "Water"), ("image",), ())}, ()),
    "taxonomy": (
        {"taxonomy": ("taxonomy", False, ("Electronics", "Phones", "Laptops", "Audio", "Headphones", "Speakers",
                                          "Home", "Kitchen", "Furniture", "Clothing", "Men", "Women", "Kids"),
                      ("text",), ("text",))}, ("text",)),
    "rte": ({"entailment": ("choices", False, ("1", "0"), ("text",), ("text",))}, ("text", "hypothesis")),
    "rlhf_pairwise": (
        {"preference": ("pairwise", False, (), ("response_a", "response_b"), ("response_a", "response_b")),
         "strength": ("choices", False, ("slight", "clear", "much"), ("prompt",), ("prompt",)),
         "rationale": ("textarea", False, (), ("prompt",), ("prompt",))}, ("prompt", "response_a", "response_b")),
    "chat_rating": (
        {"helpfulness": ("rating", False, (), ("reply",), ("reply",)),
         "issues": ("choices", True, ("none", "factual", "context", "unsafe"), ("reply",), ("reply",))},
        ("dialogue", "reply")),
    "transcription": ({"transcript": ("textarea", False, (), ("image",), ())}, ()),
    "content_moderation": (
        {"verdict": ("choices", False, ("allow", "warn", "remove"), ("text",), ("text",)),
         "categories": ("choices", True, ("hate", "harassment", "violence", "sexual", "self_harm", "spam"),
                        ("text",), ("text",))}, ("text",)),
}


def test_every_shipped_config_is_covered() -> None:
    assert {p.parent.name for p in CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_controls_types_choice_mode_options_and_targets(name: str) -> None:
    config = load(name)
    controls, text_fields = EXPECTED[name]
    got = {c.name: (c.type, c.multiple, c.labels, c.to_name, c.text_keys) for c in config.controls}
    assert got == controls
    assert config.text_fields == text_fields
    for control in config.controls:
        assert config.control(control.name) is control
        assert config.by_name[control.name] is control
        assert [o.name for o in control.objects] == list(control.to_name)  # every target exists


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_agrees_with_the_sdk(path: Path) -> None:
    """The SDK read independently is the oracle for names, tags, targets, options and object values."""
    xml = path.read_text()
    oracle = LabelInterface(xml)
    config = LabelConfig.parse(xml)
    assert [(c.name, c.tag, list(c.to_name), list(c.labels)) for c in config.controls] == [
        (t.name, t.tag, list(t.to_name), list(t.labels or ())) for t in oracle.controls
    ]
    assert [(o.name, o.value) for o in config.objects] == [(o.name, o.value) for o in oracle.objects]
    for c in config.controls:
        if c.type == "choices":
            assert c.multiple == oracle.get_control(c.name).is_multiple_choice


def test_headers_are_the_static_instructions() -> None:
    assert load("rte").headers == ("Read the text. Is the hypothesis definitely true given the text?",
                                       "Hypothesis")
    assert load("ner").headers == ("Highlight every named entity and give it a type.",)


def test_aliases_and_hints() -> None:
    entailment = load("rte").control("entailment")
    assert entailment.options == (
        Option(value="1", shown="Entailment", hint="The text makes the hypothesis true", alias="1"),
        Option(value="0", shown="No entailment", hint="The hypothesis is false or not supported by the text",
               alias="0"),
    )
    assert entailment.option("0").name == "No entailment"
    assert entailment.option("No entailment") is None  # results store the alias, never the shown name
    ner = load("ner").control("label")
    assert [(o.value, o.hint, o.alias) for o in ner.options][:2] == [("PER", "Person", ""), ("ORG", "Organisation", "")]
    assert ner.option("PER").name == "PER"


def test_ranges_of_rating_and_number() -> None:
    rating = load("sentiment_rating").control("rating")
    assert (rating.low, rating.high) == (1.0, 5.0)
    xml = """<View><Text name="t" value="$t"/><Number name="n" toName="t" min="-2" max="inf"/>
      <Rating name="r" toName="t" maxRating="ten"/><Number name="m" toName="t" min="0" max="10"/></View>"""
    config = LabelConfig.parse(xml)
    assert (config.control("n").low, config.control("n").high) == (-2.0, None)  # infinite bounds are no bound
    assert config.control("r").high == 5.0  # Label Studio's default when maxRating is not a number
    assert (config.control("m").low, config.control("m").high) == (0.0, 10.0)
    assert (load("text_classification").control("sentiment").low, rating.type) == (None, "rating")


def test_taxonomy_paths_keep_the_nesting_and_store_aliases() -> None:
    paths = load("taxonomy").control("taxonomy").paths
    assert ("Electronics", "Audio", "Headphones") in paths and ("Home",) in paths and len(paths) == 13
    xml = """<View><Text name="t" value="$t"/><Taxonomy name="tx" toName="t">
      <Choice value="Top" alias="T"><Choice value="Sub"/></Choice></Taxonomy></View>"""
    control = LabelConfig.parse(xml).control("tx")
    assert control.paths == (("T",), ("T", "Sub"))
    assert control.option("T").name == "Top"


def test_objects_and_data_keys() -> None:
    xml = """<View><Header value="Look"/><Image name="img" value="$image"/><Text name="const" value="hello"/>
      <HyperText name="page" value="$html"/><Text name="again" value="$html"/>
      <Choices name="c" toName="img,page,missing"><Choice value="A"/></Choices></View>"""
    config = LabelConfig.parse(xml)
    assert config.objects == (
        DataObject("img", "image", "$image", "image"),
        DataObject("const", "text", "hello", None),
        DataObject("page", "hypertext", "$html", "html"),
        DataObject("again", "text", "$html", "html"),
    )
    assert config.text_fields == ("html",)  # text objects with a data variable, each key once
    control = config.control("c")
    assert control.to_name == ("img", "page", "missing")
    assert [o.name for o in control.objects] == ["img", "page"]  # only the targets that exist
    assert control.text_keys == ("html",)


def test_single_and_multiple_choice_decided_by_the_attribute() -> None:
    xml = """<View><Text name="t" value="$t"/>
      <Choices name="a" toName="t"><Choice value="x"/></Choices>
      <Choices name="b" toName="t" choice="single-radio"><Choice value="x"/></Choices>
      <Choices name="c" toName="t" choice="multiple"><Choice value="x"/></Choices>
      <Choices name="d" toName="t" perRegion="true"><Choice value="x"/></Choices></View>"""
    config = LabelConfig.parse(xml)
    assert [c.multiple for c in config.controls] == [False, False, True, False]
    assert [c.per_region for c in config.controls] == [False, False, False, True]


def test_same_xml_gives_the_same_object() -> None:
    xml = (CONFIG_DIR / "rte" / "config.xml").read_text()
    first = LabelConfig.parse(xml)
    assert LabelConfig.parse(xml) is first
    assert LabelConfig.parse("".join(xml)) is first  # keyed by the string's value, not its identity
    assert LabelConfig.parse(xml + " ") is not first
    results: list[LabelConfig] = []
    threads = [threading.Thread(target=lambda: results.append(LabelConfig.parse(xml))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is first for r in results)


def test_parsed_configs_are_immutable() -> None:
    config = load("text_classification")
    control = config.controls[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        control.multiple = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.controls = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.by_name["other"] = control  # type: ignore[index]
    assert isinstance(control.options, tuple) and isinstance(control.objects, tuple)
    assert hash(control) == hash(Control(**{f.name: getattr(control, f.name) for f in dataclasses.fields(control)}))


@pytest.mark.parametrize("xml", ["", "<View>", "not xml at all", "<View><Text name='t' value='$t'></View>"])
def test_unparsable_xml_is_a_label_config_error(xml: str) -> None:
    with pytest.raises(LabelConfigError, match="label config does not parse"):
        LabelConfig.parse(xml)
    with pytest.raises(ValueError):  # callers that catch ValueError keep working
        LabelConfig.parse(xml)


def test_unknown_control_is_a_label_config_error_with_the_sdk_message() -> None:
    config = load("text_classification")
    assert config.get("entailment") is None
    with pytest.raises(LabelConfigError, match="Name entailment is not found"):
        config.control("entailment")
    with pytest.raises(LabelConfigError, match="Name entailment is not found"):
        config.control_tag("entailment")
    assert config.control_tag("sentiment").name == "sentiment"


def test_large_configs_are_cached_few_at_a_time_and_huge_ones_refused():
    from core.label_config import LARGE_CACHE_SIZE, LARGE_CONFIG_BYTES, MAX_CONFIG_BYTES

    def config(n: int, pad: int) -> str:
        return (f'<View><Header value="{"x" * pad}"/><Text name="t" value="$t"/>'
                f'<Choices name="c{n}" toName="t"><Choice value="a"/><Choice value="b"/></Choices></View>')

    large = [config(n, LARGE_CONFIG_BYTES) for n in range(LARGE_CACHE_SIZE + 1)]
    first = LabelConfig.parse(large[0])
    assert LabelConfig.parse(large[0]) is first
    for xml in large[1:]:
        LabelConfig.parse(xml)
    assert LabelConfig.parse(large[0]) is not first  # pushed out by LARGE_CACHE_SIZE later large ones
    small = config(0, 10)
    assert LabelConfig.parse(small) is LabelConfig.parse(small)  # typical configs stay cached
    with pytest.raises(LabelConfigError, match="larger than"):
        LabelConfig.parse(config(0, MAX_CONFIG_BYTES))
