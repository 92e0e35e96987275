"""From a Label Studio label config to an answer schema for the LLM, and from its answer back to regions.

The schema given to the model is built here from :class:`LabelInterface` rather than taken from
``LabelInterface.to_json_schema()``: that one asks for NER character offsets (which LLMs get wrong) and uses
``oneOf``/``uniqueItems`` that strict structured-output modes refuse. Ours asks for what a model can answer
reliably — option names, span *text* plus label, taxonomy paths as enumerated strings — and every field is
required with no extra properties, so OpenAI's ``strict`` mode and llama.cpp's grammar both accept it.

Every answer is checked twice: against our schema's rules while converting, then the built regions against
the config with ``LabelInterface.validate_prediction()``. Anything that fails is dropped and counted.

NER spans: the model returns the span text; :func:`locate_spans` finds it in the task text. By default every
occurrence is labelled (an entity named twice is tagged twice, as annotators are asked to do); ``first``
labels only the first. Offsets are Python code-point offsets, which is what Label Studio stores.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

TEXT_OBJECTS = {"text", "hypertext", "header", "paragraphs", "table"}
IMAGE_OBJECTS = {"image"}
SUPPORTED_CONTROLS = {"choices", "labels", "rating", "pairwise", "textarea", "taxonomy", "number"}
TAXONOMY_SEP = " / "


@dataclass(frozen=True)
class ObjectSpec:
    """An object tag the model reads: its name, tag, the task field it shows, and how it is sent."""

    name: str
    tag: str
    value_name: str | None  # task data key for "$field" values, else None
    static_value: str | None
    kind: str  # "text", "image" or "other"


@dataclass
class ControlSpec:
    """A control tag the model answers."""

    name: str
    tag: str
    to_name: list[str]
    labels: list[str] = field(default_factory=list)  # as stored in results (a Choice's alias when it has one)
    shown: dict[str, str] = field(default_factory=dict)  # stored label -> name shown to the model
    hints: dict[str, str] = field(default_factory=dict)  # stored label -> its hint attribute
    multiple: bool = False
    max_rating: int = 5
    minimum: float | None = None  # Number bounds
    maximum: float | None = None
    paths: list[list[str]] = field(default_factory=list)  # taxonomy: every root-to-node path (stored values)
    hint: str = ""

    def show(self, label: str) -> str:
        return self.shown.get(label, label)

    @property
    def options(self) -> list[str]:
        """The option names the model chooses from."""
        return [self.show(label) for label in self.labels]

    def stored(self, option: str) -> str | None:
        """The stored label for an option name the model gave, or None when it is not an option."""
        for label in self.labels:
            if self.show(label) == option:
                return label
        return None

    def path_option(self, path: list[str]) -> str:
        return TAXONOMY_SEP.join(self.show(p) for p in path)


@dataclass
class ParsedAnswer:
    """The regions built from one answer, what was dropped, and the answer's per-control values."""

    regions: list[dict[str, Any]]
    problems: Counter[str]
    values: dict[str, Any]  # control name -> canonical value (for agreement across samples)
    value_texts: dict[str, list[str]]  # control name -> strings as they appear in the answer JSON


def _taxonomy_paths(config: str, name: str) -> list[list[str]]:
    """Every root-to-node path of a Taxonomy tag (LabelInterface flattens the tree, so read the XML)."""
    root = ET.fromstring(config)
    node = next((el for el in root.iter("Taxonomy") if el.get("name") == name), None)
    paths: list[list[str]] = []

    def walk(el: ET.Element, prefix: list[str]) -> None:
        for child in el:
            if child.tag == "Choice" and child.get("value") is not None:
                path = [*prefix, str(child.get("alias") or child.get("value"))]
                paths.append(path)
                walk(child, path)

    if node is not None:
        walk(node, [])
    return paths


def _taxonomy_names(config: str, name: str) -> dict[str, str]:
    root = ET.fromstring(config)
    node = next((el for el in root.iter("Taxonomy") if el.get("name") == name), None)
    if node is None:
        return {}
    return {
        str(el.get("alias")): str(el.get("value"))
        for el in node.iter("Choice")
        if el.get("alias") and el.get("value")
    }


def _headers(config: str) -> list[str]:
    try:
        root = ET.fromstring(config)
    except ET.ParseError:
        return []
    out = []
    for el in root.iter("Header"):
        text = el.get("value") or (el.text or "").strip()
        if text and not text.startswith("$"):
            out.append(text)
    return out


@dataclass
class ConfigPlan:
    """What an LLM can answer in one label config, and how to turn its answers into regions."""

    config: str
    interface: LabelInterface
    controls: list[ControlSpec]
    objects: list[ObjectSpec]
    skipped: dict[str, str]  # control name -> why it gets no prediction
    headers: list[str]

    @property
    def uses_images(self) -> bool:
        return any(o.kind == "image" for o in self.objects)

    # ----- schema ------------------------------------------------------------------------------------

    def control_schema(self, c: ControlSpec) -> dict[str, Any]:
        if c.tag == "choices":
            if c.multiple:
                return {"type": "array", "items": {"type": "string", "enum": c.options}}
            return {"type": "string", "enum": c.options}
        if c.tag == "pairwise":
            return {"type": "string", "enum": ["left", "right"]}
        if c.tag == "rating":
            return {"type": "integer", "minimum": 1, "maximum": c.max_rating}
        if c.tag == "number":
            out: dict[str, Any] = {"type": "number"}
            if c.minimum is not None:
                out["minimum"] = c.minimum
            if c.maximum is not None:
                out["maximum"] = c.maximum
            return out
        if c.tag == "textarea":
            return {"type": "string"}
        if c.tag == "taxonomy":
            options = [c.path_option(p) for p in c.paths]
            return {"type": "array", "items": {"type": "string", "enum": options}}
        if c.tag == "labels":
            return {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string"},
                        "label": {"type": "string", "enum": c.options},
                    },
                    "required": ["text", "label"],
                    "additionalProperties": False,
                },
            }
        raise ValueError(f"unsupported control {c.tag}")

    def json_schema(self) -> dict[str, Any]:
        """The answer's JSON Schema: one required property per answerable control."""
        return {
            "type": "object",
            "properties": {c.name: self.control_schema(c) for c in self.controls},
            "required": [c.name for c in self.controls],
            "additionalProperties": False,
        }

    # ----- task data ---------------------------------------------------------------------------------

    def object_values(self, data: dict[str, Any]) -> dict[str, Any]:
        """Object name -> the value the annotator sees (task data field or the tag's static value)."""
        out: dict[str, Any] = {}
        for o in self.objects:
            if o.value_name is not None:
                out[o.name] = data.get(o.value_name)
            else:
                out[o.name] = o.static_value
        return out

    # ----- answer -> regions ---------------------------------------------------------------------------

    def parse_answer(
        self,
        answer: Any,
        texts: dict[str, str],
        *,
        restore: Callable[[str], str] = lambda s: s,
        occurrences: str = "all",
    ) -> ParsedAnswer:
        """Build validated regions from a decoded answer; ``texts`` holds each Text object's original text."""
        problems: Counter[str] = Counter()
        regions: list[dict[str, Any]] = []
        values: dict[str, Any] = {}
        value_texts: dict[str, list[str]] = {}
        if not isinstance(answer, dict):
            problems["invalid_answer"] += 1
            return ParsedAnswer([], problems, {}, {})
        for c in self.controls:
            raw = answer.get(c.name)
            if raw is None:
                problems["missing_control"] += 1
                continue
            built = self._control_regions(c, raw, texts, restore, occurrences, problems)
            if built is None:
                problems["invalid_value"] += 1
                continue
            control_regions, canonical, shown = built
            for region in control_regions:
                errors = self._validate_region(region)
                if errors:
                    problems["invalid_region"] += 1
                    continue
                regions.append(region)
            values[c.name] = canonical
            value_texts[c.name] = shown
        return ParsedAnswer(regions, problems, values, value_texts)

    def _region(self, c: ControlSpec, value: dict[str, Any], to_name: str | None = None) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex[:10],
            "from_name": c.name,
            "to_name": to_name or c.to_name[0],
            "type": c.tag,
            "value": value,
        }

    def _control_regions(
        self,
        c: ControlSpec,
        raw: Any,
        texts: dict[str, str],
        restore: Callable[[str], str],
        occurrences: str,
        problems: Counter[str],
    ) -> tuple[list[dict[str, Any]], Any, list[str]] | None:
        if c.tag == "choices":
            given = raw if isinstance(raw, list) else [raw]
            if not given or not all(isinstance(x, str) and c.stored(x) is not None for x in given):
                return None
            if not c.multiple and len(given) != 1:
                return None
            given = list(dict.fromkeys(given))
            chosen = [str(c.stored(x)) for x in given]
            return [self._region(c, {"choices": chosen})], tuple(sorted(chosen)), given
        if c.tag == "pairwise":
            if raw not in ("left", "right"):
                return None
            # Label Studio's Pairwise result names the control itself as to_name.
            return [self._region(c, {"selected": raw}, to_name=c.name)], raw, [raw]
        if c.tag == "rating":
            if isinstance(raw, bool) or not isinstance(raw, int | float) or int(raw) != raw:
                return None
            if not 1 <= int(raw) <= c.max_rating:
                return None
            return [self._region(c, {"rating": int(raw)})], int(raw), [str(int(raw))]
        if c.tag == "number":
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                return None
            if (c.minimum is not None and raw < c.minimum) or (c.maximum is not None and raw > c.maximum):
                return None
            return [self._region(c, {"number": raw})], raw, [json.dumps(raw)]
        if c.tag == "textarea":
            if not isinstance(raw, str):
                return None
            text = restore(raw).strip()
            if not text:
                return [], "", []
            return [self._region(c, {"text": [text]})], text, [raw]
        if c.tag == "taxonomy":
            if not isinstance(raw, list) or not raw:
                return None
            allowed = {c.path_option(p): p for p in c.paths}
            if not all(isinstance(x, str) and x in allowed for x in raw):
                return None
            picked = [allowed[x] for x in dict.fromkeys(raw)]
            return [self._region(c, {"taxonomy": picked})], tuple(sorted(map(tuple, picked))), list(raw)
        if c.tag == "labels":
            return self._span_regions(c, raw, texts, restore, occurrences, problems)
        return None

    def _span_regions(
        self,
        c: ControlSpec,
        raw: Any,
        texts: dict[str, str],
        restore: Callable[[str], str],
        occurrences: str,
        problems: Counter[str],
    ) -> tuple[list[dict[str, Any]], Any, list[str]] | None:
        if not isinstance(raw, list):
            return None
        text = texts.get(c.to_name[0])
        if text is None:
            return None
        out: list[dict[str, Any]] = []
        seen: set[tuple[int, int, str]] = set()
        canonical: set[tuple[str, str]] = set()
        shown: list[str] = []
        for item in raw:
            if not isinstance(item, dict):
                problems["invalid_span"] += 1
                continue
            span, option = item.get("text"), item.get("label")
            label = c.stored(option) if isinstance(option, str) else None
            if not isinstance(span, str) or not span.strip() or label is None:
                problems["invalid_span"] += 1
                continue
            original = restore(span)
            found = locate_spans(text, original, occurrences=occurrences)
            if not found:
                problems["span_not_found"] += 1
                continue
            canonical.add((text[found[0][0] : found[0][1]], label))
            shown.append(span)
            for start, end in found:
                if (start, end, label) in seen:
                    continue
                seen.add((start, end, label))
                value = {"start": start, "end": end, "text": text[start:end], "labels": [label]}
                out.append(self._region(c, value))
        return out, tuple(sorted(canonical)), shown

    def _validate_region(self, region: dict[str, Any]) -> list[str]:
        if region["type"] == "pairwise":
            # The SDK's validator looks the Pairwise to_name up among objects, where it is not.
            ok = region["value"].get("selected") in ("left", "right")
            return [] if ok else ["bad pairwise value"]
        return list(self.interface.validate_prediction({"result": [region]}, return_errors=True) or [])

    # ----- regions -> answer (few-shot examples) ----------------------------------------------------------

    def answer_from_result(self, result: list[dict[str, Any]]) -> dict[str, Any]:
        """The answer JSON a gold result corresponds to (used to show the model worked examples)."""
        answer: dict[str, Any] = {}
        by_name = {c.name: c for c in self.controls}
        for region in result or []:
            c = by_name.get(region.get("from_name", ""))
            value = region.get("value") or {}
            if c is None:
                continue
            if c.tag == "choices" and value.get("choices"):
                shown = [c.show(x) for x in value["choices"]]
                answer[c.name] = shown if c.multiple else shown[0]
            elif c.tag == "pairwise" and "selected" in value:
                answer[c.name] = value["selected"]
            elif c.tag == "rating" and "rating" in value:
                answer[c.name] = value["rating"]
            elif c.tag == "number" and "number" in value:
                answer[c.name] = value["number"]
            elif c.tag == "textarea" and value.get("text"):
                answer[c.name] = " ".join(value["text"])
            elif c.tag == "taxonomy" and value.get("taxonomy"):
                answer[c.name] = [c.path_option(p) for p in value["taxonomy"]]
            elif c.tag == "labels" and value.get("labels"):
                item = {"text": value.get("text", ""), "label": c.show(value["labels"][0])}
                answer.setdefault(c.name, []).append(item)
        for c in self.controls:
            if c.name not in answer:
                answer[c.name] = [] if c.tag in ("labels",) or (c.tag == "choices" and c.multiple) else None
        return answer


def locate_spans(text: str, span: str, *, occurrences: str = "all") -> list[tuple[int, int]]:
    """Character offsets of ``span`` in ``text``: exact matches, else any case and any run of whitespace.

    Matches must sit on word boundaries where the span starts or ends with a word character, so "US" is not
    found inside "USA". ``occurrences="first"`` keeps only the first match.
    """
    span = span.strip()
    if not span:
        return []
    core = r"\s+".join(re.escape(part) for part in span.split())
    left = r"(?<!\w)" if re.match(r"\w", span) else ""
    right = r"(?!\w)" if re.search(r"\w$", span) else ""
    found: list[tuple[int, int]] = []
    for pattern, flags in ((left + re.escape(span) + right, 0), (left + core + right, re.IGNORECASE)):
        found = [m.span() for m in re.finditer(pattern, text, flags)]
        if found:
            break
    return found[:1] if occurrences == "first" else found


def _object_kind(tag: str) -> str:
    if tag in TEXT_OBJECTS:
        return "text"
    if tag in IMAGE_OBJECTS:
        return "image"
    return "other"


@lru_cache(maxsize=256)
def build_plan(config: str, vision: bool = False) -> ConfigPlan:
    """Parse ``config`` and keep the controls an LLM can answer (images only when ``vision``)."""
    li = LabelInterface(config)
    controls: list[ControlSpec] = []
    used: dict[str, ObjectSpec] = {}
    skipped: dict[str, str] = {}
    for ctl in li.controls:
        tag = ctl.tag.lower()
        objs = [
            ObjectSpec(
                name=o.name,
                tag=o.tag.lower(),
                value_name=o.value_name if o.value_is_variable else None,
                static_value=None if o.value_is_variable else o.value,
                kind=_object_kind(o.tag.lower()),
            )
            for o in (ctl.objects or [])
        ]
        if tag not in SUPPORTED_CONTROLS:
            skipped[ctl.name] = f"{ctl.tag} is not answerable by a text LLM"
            continue
        if str(ctl.attr.get("perRegion", "false")).lower() == "true":
            skipped[ctl.name] = "per-region controls need a region first"
            continue
        if not objs:
            skipped[ctl.name] = "no object to read"
            continue
        if any(o.kind == "other" for o in objs):
            skipped[ctl.name] = f"object type {objs[0].tag} is not sent to the model"
            continue
        if any(o.kind == "image" for o in objs) and not vision:
            skipped[ctl.name] = "image input needs a vision model (CROWDGATE_LLM_VISION=on)"
            continue
        if tag == "labels" and objs[0].tag != "text":
            skipped[ctl.name] = "span labels are only located in <Text> objects"
            continue
        labels = list(ctl.labels or [])
        spec = ControlSpec(name=ctl.name, tag=tag, to_name=list(ctl.to_name), labels=labels)
        spec.hint = str(ctl.attr.get("hint", "") or "")
        for label, label_tag in (ctl.labels_attrs or {}).items():
            attrs = getattr(label_tag, "attr", {}) or {}
            if attrs.get("value"):
                spec.shown[label] = str(attrs["value"])
            if attrs.get("hint"):
                spec.hints[label] = str(attrs["hint"])
        if tag == "taxonomy":
            spec.shown.update(_taxonomy_names(config, ctl.name))
        if len(set(spec.options)) != len(spec.options):
            spec.shown = {}  # two aliases share a display name: show the stored values instead
        if tag in ("choices", "labels") and not labels:
            skipped[ctl.name] = "options come from task data (dynamic), not supported"
            continue
        if tag == "choices":
            spec.multiple = str(ctl.attr.get("choice", "single")).lower() == "multiple"
        if tag == "rating":
            spec.max_rating = int(ctl.attr.get("maxRating", 5))
        if tag == "number":
            for attr, slot in (("min", "minimum"), ("max", "maximum")):
                with contextlib.suppress(TypeError, ValueError):
                    setattr(spec, slot, float(ctl.attr.get(attr)))
        if tag == "pairwise" and len(objs) != 2:
            skipped[ctl.name] = "pairwise needs exactly two objects"
            continue
        if tag == "taxonomy":
            spec.paths = _taxonomy_paths(config, ctl.name)
            if not spec.paths:
                skipped[ctl.name] = "taxonomy options come from an API or task data"
                continue
        controls.append(spec)
        for o in objs:
            used.setdefault(o.name, o)
    # Send every text the annotator sees (an RTE hypothesis is often linked to no control), plus the images
    # an answerable control reads, in config order so the prompt reads like the labeling screen.
    objects: list[ObjectSpec] = []
    for o in li.objects:
        tag = o.tag.lower()
        if o.name in used:
            objects.append(used[o.name])
        elif _object_kind(tag) == "text" and controls:
            objects.append(
                ObjectSpec(
                    name=o.name,
                    tag=tag,
                    value_name=o.value_name if o.value_is_variable else None,
                    static_value=None if o.value_is_variable else o.value,
                    kind="text",
                )
            )
    return ConfigPlan(config, li, controls, objects, skipped, _headers(config))
