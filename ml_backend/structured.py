"""From a Label Studio label config to an answer schema for the LLM, and from its answer back to regions.

The schema given to the model is built here from :class:`LabelInterface` rather than taken from
``LabelInterface.to_json_schema()``: that one asks for NER character offsets (which LLMs get wrong) and uses
``oneOf``/``uniqueItems`` that strict structured-output modes refuse. Ours asks for what a model can answer
reliably — option names, span *text* plus label, taxonomy paths as enumerated strings — and every field is
required with no extra properties, so OpenAI's ``strict`` mode and llama.cpp's grammar both accept it.

Every answer is checked twice: against our schema's rules while converting, then the built regions against
the config with ``LabelInterface.validate_prediction()``. Anything that fails is dropped and counted, and so
are keys the schema does not have: an answer can only ever name the config's controls and options.

NER spans: the model returns the span text; :func:`locate_spans` finds it in the task text. By default every
occurrence is labelled (an entity named twice is tagged twice, as annotators are asked to do); ``first``
labels only the first. Offsets are Python code-point offsets, which is what Label Studio stores.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from core.label_config import Control, DataObject, LabelConfig

if TYPE_CHECKING:
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


@dataclass(frozen=True)
class AnswerSpec:
    """A control the model answers: the config's :class:`Control` and the option names the model sees."""

    control: Control
    shown: Mapping[str, str]  # stored label -> name shown to the model (a Choice's value when it has an alias)

    @property
    def name(self) -> str:
        return self.control.name

    @property
    def tag(self) -> str:
        """Lower-case control type, as in a region's ``type``."""
        return self.control.type

    @property
    def to_name(self) -> tuple[str, ...]:
        return self.control.to_name

    @property
    def labels(self) -> tuple[str, ...]:
        """The options as stored in results (a Choice's alias when it has one)."""
        return self.control.labels

    @property
    def hints(self) -> dict[str, str]:
        """Stored label -> its hint attribute."""
        return {o.value: o.hint for o in self.control.options if o.hint}

    @property
    def multiple(self) -> bool:
        return self.control.multiple

    @property
    def max_rating(self) -> int:
        high = self.control.high
        return int(high) if self.control.type == "rating" and high is not None else 5

    @property
    def minimum(self) -> float | None:
        """Number bounds."""
        return self.control.low if self.control.type == "number" else None

    @property
    def maximum(self) -> float | None:
        return self.control.high if self.control.type == "number" else None

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        """Taxonomy: every root-to-node path (stored values)."""
        return self.control.paths

    @property
    def hint(self) -> str:
        return self.control.hint

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

    def path_option(self, path: Sequence[str]) -> str:
        return TAXONOMY_SEP.join(self.show(p) for p in path)


@dataclass
class ParsedAnswer:
    """The regions built from one answer, what was dropped, and the answer's per-control values."""

    regions: list[dict[str, Any]]
    problems: Counter[str]
    values: dict[str, Any]  # control name -> canonical value (for agreement across samples)
    value_texts: dict[str, list[str]]  # control name -> strings as they appear in the answer JSON


@dataclass
class ConfigPlan:
    """What an LLM can answer in one label config, and how to turn its answers into regions."""

    config: str
    interface: LabelInterface
    controls: list[AnswerSpec]
    objects: list[ObjectSpec]
    skipped: dict[str, str]  # control name -> why it gets no prediction
    headers: list[str]

    # ----- schema ------------------------------------------------------------------------------------

    def control_schema(self, c: AnswerSpec) -> dict[str, Any]:
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
        # Keys the schema does not ask for (an "action", a "url" a prompt injection asked for) are never read;
        # counting them shows the attempt.
        known = {c.name for c in self.controls}
        unknown = sum(1 for key in answer if key not in known)
        if unknown:
            problems["unknown_field"] += unknown
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

    def _region(self, c: AnswerSpec, value: dict[str, Any], to_name: str | None = None) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex[:10],
            "from_name": c.name,
            "to_name": to_name or c.to_name[0],
            "type": c.tag,
            "value": value,
        }

    def _control_regions(
        self,
        c: AnswerSpec,
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
            picked = [list(allowed[x]) for x in dict.fromkeys(raw)]
            return [self._region(c, {"taxonomy": picked})], tuple(sorted(map(tuple, picked))), list(raw)
        if c.tag == "labels":
            return self._span_regions(c, raw, texts, restore, occurrences, problems)
        return None

    def _span_regions(
        self,
        c: AnswerSpec,
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


def _object_spec(o: DataObject) -> ObjectSpec:
    return ObjectSpec(
        name=o.name,
        tag=o.type,
        value_name=o.data_key,
        static_value=None if o.data_key is not None else o.value,
        kind=_object_kind(o.type),
    )


def _skip_reason(ctl: Control, objs: list[ObjectSpec], vision: bool) -> str | None:
    """Why an LLM gets no question for ``ctl``, or None when it can answer it."""
    if ctl.type not in SUPPORTED_CONTROLS:
        return f"{ctl.tag} is not answerable by a text LLM"
    if ctl.per_region:
        return "per-region controls need a region first"
    if not objs:
        return "no object to read"
    if any(o.kind == "other" for o in objs):
        return f"object type {objs[0].tag} is not sent to the model"
    if any(o.kind == "image" for o in objs) and not vision:
        return "image input needs a vision model (CROWDGATE_LLM_VISION=on)"
    if ctl.type == "labels" and objs[0].tag != "text":
        return "span labels are only located in <Text> objects"
    if ctl.type in ("choices", "labels") and not ctl.labels:
        return "options come from task data (dynamic), not supported"
    if ctl.type == "pairwise" and len(objs) != 2:
        return "pairwise needs exactly two objects"
    if ctl.type == "taxonomy" and not ctl.paths:
        return "taxonomy options come from an API or task data"
    return None


def _answer_spec(ctl: Control) -> AnswerSpec:
    shown = {o.value: o.shown for o in ctl.options if o.shown}
    if len(set(shown.get(label, label) for label in ctl.labels)) != len(ctl.labels):
        shown = {}  # two aliases share a display name: show the stored values instead
    return AnswerSpec(ctl, MappingProxyType(shown))


@lru_cache(maxsize=256)
def build_plan(config: str, vision: bool = False) -> ConfigPlan:
    """Keep the controls of ``config`` an LLM can answer (images only when ``vision``)."""
    parsed = LabelConfig.parse(config)
    controls: list[AnswerSpec] = []
    used: dict[str, ObjectSpec] = {}
    skipped: dict[str, str] = {}
    for ctl in parsed.controls:
        objs = [_object_spec(o) for o in ctl.objects]
        reason = _skip_reason(ctl, objs, vision)
        if reason is not None:
            skipped[ctl.name] = reason
            continue
        controls.append(_answer_spec(ctl))
        for o in objs:
            used.setdefault(o.name, o)
    # Send every text the annotator sees (an RTE hypothesis is often linked to no control), plus the images
    # an answerable control reads, in config order so the prompt reads like the labeling screen.
    objects: list[ObjectSpec] = []
    for o in parsed.objects:
        if o.name in used:
            objects.append(used[o.name])
        elif _object_kind(o.type) == "text" and controls:
            objects.append(_object_spec(o))
    return ConfigPlan(config, parsed.interface, controls, objects, skipped, list(parsed.headers))
