"""The one reader of Label Studio label configs: what every part of crowdgate needs to know about a config.

``LabelConfig.parse(xml)`` reads a config once with label-studio-sdk's ``LabelInterface`` and keeps the answer
in an LRU cache keyed by the XML string, so scoring (microseconds per pair) never parses. What it gives:

- ``controls``: one frozen :class:`Control` per control tag, in config order, with its lower-case ``type``
  (the region ``type``), its ``toName`` targets and their object tags, its options (the value a result stores,
  the name shown, the hint), whether several options may be picked (``multiple``, decided only here), the
  numeric range of Rating / Number, and the paths of a Taxonomy;
- ``objects``: one frozen :class:`DataObject` per object tag, with the task data key its ``value`` reads;
- ``text_fields``: the data keys of the text objects (Text, HyperText, Paragraphs), in config order;
- ``headers``: the static texts of ``<Header>`` tags (instructions shown to annotators);
- ``interface``: the SDK's ``LabelInterface`` itself, for building and validating regions.

Everything here is immutable except ``interface``, which is shared by every caller of the same XML (and across
threads): use only its read-only methods (``get_control(...).label(...)``, ``validate_prediction``; its
``load_task`` returns a copy). Never change its tags in place.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

__all__ = ["TEXT_TAGS", "Control", "DataObject", "LabelConfig", "LabelConfigError", "Option", "finite_number"]

TEXT_TAGS = frozenset({"text", "hypertext", "paragraphs"})
"""Object tag types (lower case) whose task data is text."""

_CACHE_SIZE = 256
# A parsed config takes about 50 times its XML in memory, so configs are cached by size: typical ones (a few KB)
# 256 at a time, large ones (a big taxonomy) only 4, and anything over MAX_CONFIG_BYTES is refused.
LARGE_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_BYTES = 1024 * 1024
LARGE_CACHE_SIZE = 4


class LabelConfigError(ValueError):
    """A label config that does not parse, or a control name it does not have (the SDK's message)."""


@dataclass(frozen=True, slots=True)
class Option:
    """One ``<Choice>`` / ``<Label>`` of a control."""

    value: str  # what a result stores: the tag's alias when it has one, else its value
    shown: str = ""  # what the annotator reads: the value attribute ("" when the tag has only an alias)
    hint: str = ""
    alias: str = ""

    @property
    def name(self) -> str:
        """The name shown to people and models: the value attribute, else the stored value."""
        return self.shown or self.value


@dataclass(frozen=True, slots=True)
class DataObject:
    """One object tag (``<Text>``, ``<Image>``, ...): what the annotator looks at."""

    name: str
    type: str  # lower-case tag name: "text", "image", "hypertext", ...
    value: str = ""  # the value attribute as written: "$text" or a constant
    data_key: str | None = None  # "$text" -> "text"; None when the value is not a task data variable

    @property
    def is_text(self) -> bool:
        return self.type in TEXT_TAGS


@dataclass(frozen=True, slots=True)
class Control:
    """One control tag: what an annotator (or a model) answers. Only ``name`` and ``type`` are required, so a
    scorer can be given a control the config no longer has."""

    name: str
    type: str  # lower-case tag name, as in a region's "type": "choices", "rectanglelabels", ...
    tag: str = ""  # the tag as written in the XML: "Choices", "RectangleLabels", ...
    to_name: tuple[str, ...] = ()
    objects: tuple[DataObject, ...] = ()  # the object tags of to_name that exist, in to_name order
    options: tuple[Option, ...] = ()
    multiple: bool = False  # choice="multiple": several options at once (Choices, Taxonomy, *Labels)
    low: float | None = None  # Rating: 1..maxRating; Number: its min / max when given
    high: float | None = None
    paths: tuple[tuple[str, ...], ...] = ()  # Taxonomy: every root-to-node path of stored values
    per_region: bool = False  # perRegion="true": answered once per region, not once per task
    hint: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        """The values a result may store, in config order."""
        return tuple(o.value for o in self.options)

    def option(self, value: str) -> Option | None:
        """The option a stored value names, or None."""
        return next((o for o in self.options if o.value == value), None)

    @property
    def text_keys(self) -> tuple[str, ...]:
        """Task data keys of the text objects this control reads."""
        return tuple(o.data_key for o in self.objects if o.is_text and o.data_key)


@dataclass(frozen=True, eq=False)
class LabelConfig:
    """A parsed label config. Build it with :meth:`parse` (cached); equal XML gives the same object."""

    xml: str
    controls: tuple[Control, ...]
    objects: tuple[DataObject, ...]
    headers: tuple[str, ...]
    interface: LabelInterface = field(repr=False)
    _by_name: Mapping[str, Control] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", MappingProxyType({c.name: c for c in self.controls}))

    @classmethod
    def parse(cls, xml: str) -> LabelConfig:
        """The config for ``xml``, read once per distinct string; :class:`LabelConfigError` when it does not parse."""
        return _parse(xml)

    def get(self, name: str) -> Control | None:
        return self._by_name.get(name)

    def control(self, name: str) -> Control:
        """The control named ``name``; :class:`LabelConfigError` when the config has none."""
        found = self.get(name)
        if found is None:
            raise LabelConfigError(_sdk_message(lambda: self.interface.get_control(name), f"no control {name!r}"))
        return found

    def control_tag(self, name: str) -> Any:
        """The SDK's ``ControlTag`` for ``name``, to build regions with ``.label()``; errors as :meth:`control`."""
        self.control(name)
        return self.interface.get_control(name)

    @property
    def by_name(self) -> Mapping[str, Control]:
        """``from_name`` -> control (read-only)."""
        return self._by_name

    @property
    def text_fields(self) -> tuple[str, ...]:
        """Task data keys of the text objects, in config order, each once."""
        return tuple(dict.fromkeys(o.data_key for o in self.objects if o.is_text and o.data_key))


def _sdk_message(call: Any, fallback: str) -> str:
    try:
        call()
    except Exception as exc:  # the SDK raises bare Exception for unknown names
        return str(exc)
    return fallback


def finite_number(raw: Any, default: float | None = None) -> float | None:
    """``raw`` as a finite float (a config bound, a result's value), else ``default``."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def _data_object(tag: Any) -> DataObject:
    value = str(tag.value or "")
    return DataObject(
        name=str(tag.name),
        type=str(tag.tag).lower(),
        value=value,
        data_key=tag.value_name if value and tag.value_is_variable else None,
    )


def _options(tag: Any) -> tuple[Option, ...]:
    # labels_attrs maps each stored value (alias or value) to its LabelTag, in config order, nested ones included.
    out = []
    for stored, label_tag in (tag.labels_attrs or {}).items():
        attr = getattr(label_tag, "attr", None) or {}
        out.append(
            Option(
                value=str(stored),
                shown=str(attr.get("value") or ""),
                hint=str(attr.get("hint") or ""),
                alias=str(attr.get("alias") or ""),
            )
        )
    return tuple(out)


def _taxonomy_paths(root: ET.Element | None, name: str) -> tuple[tuple[str, ...], ...]:
    """Every root-to-node path of a Taxonomy: the SDK flattens its tree, so the nesting is read from the XML."""
    if root is None:
        return ()
    node = next((el for el in root.iter("Taxonomy") if el.get("name") == name), None)
    paths: list[tuple[str, ...]] = []

    def walk(el: ET.Element, prefix: tuple[str, ...]) -> None:
        for child in el:
            if child.tag == "Choice" and child.get("value") is not None:
                path = (*prefix, str(child.get("alias") or child.get("value")))
                paths.append(path)
                walk(child, path)

    if node is not None:
        walk(node, ())
    return tuple(paths)


def _headers(root: ET.Element | None) -> tuple[str, ...]:
    # Headers have no name, so the SDK keeps them nowhere.
    if root is None:
        return ()
    out = []
    for el in root.iter("Header"):
        text = el.get("value") or (el.text or "").strip()
        if text and not text.startswith("$"):
            out.append(text)
    return tuple(out)


def _control(tag: Any, objects: Mapping[str, DataObject], root: ET.Element | None) -> Control:
    kind = str(tag.tag).lower()
    attr = dict(tag.attr or {})
    low = high = None
    if kind == "rating":
        low, high = 1.0, finite_number(attr.get("maxRating"), 5.0)
    elif kind == "number":
        low, high = finite_number(attr.get("min")), finite_number(attr.get("max"))
    to_name = tuple(str(n) for n in tag.to_name or ())
    return Control(
        name=str(tag.name),
        type=kind,
        tag=str(tag.tag),
        to_name=to_name,
        objects=tuple(objects[n] for n in to_name if n in objects),
        options=_options(tag),
        # The one place "multiple choice" is decided, exactly as Label Studio's frontend reads the attribute.
        multiple=attr.get("choice") == "multiple",
        low=low,
        high=high,
        paths=_taxonomy_paths(root, str(tag.name)) if kind == "taxonomy" else (),
        per_region=str(attr.get("perRegion", "false")).lower() == "true",
        hint=str(attr.get("hint") or ""),
    )


def _build(xml: str) -> LabelConfig:
    # Two threads missing the cache at once may each build one (equal, immutable) object; later calls share one.
    try:
        interface = LabelInterface(xml)
    except Exception as exc:  # the SDK raises its own XML error and bare Exceptions: one error type for callers
        raise LabelConfigError(f"label config does not parse: {exc}") from exc
    try:
        # Second, stdlib read of the same XML only for what the SDK drops (taxonomy nesting, headers).
        root: ET.Element | None = ET.fromstring(xml)
    except ET.ParseError:
        root = None
    objects = {str(o.name): _data_object(o) for o in interface.objects or ()}
    controls = tuple(_control(tag, objects, root) for tag in interface.controls or ())
    return LabelConfig(xml, controls, tuple(objects.values()), _headers(root), interface)


def _parse(xml: str) -> LabelConfig:
    if not isinstance(xml, str):
        raise LabelConfigError(f"a label config is an XML string, got {type(xml).__name__}")
    if len(xml) > MAX_CONFIG_BYTES:
        raise LabelConfigError(f"label config larger than {MAX_CONFIG_BYTES} characters ({len(xml)})")
    return (_parse_large if len(xml) > LARGE_CONFIG_BYTES else _parse_small)(xml)


_parse_small = lru_cache(maxsize=_CACHE_SIZE)(_build)
_parse_large = lru_cache(maxsize=LARGE_CACHE_SIZE)(_build)
