"""A label config folder: everything an admin ships for one task type, read and checked before anything is written.

One folder per task type (``label_configs/<type>/``) holds five files::

    config.xml      the Label Studio label config
    guideline.html  the annotation guideline Label Studio shows (the project's ``expert_instruction``); its
                    version is machine-readable and shown: <p class="guideline-version">Guideline version 3</p>
    tasks.jsonl     sample tasks, one a line ({"data": {...}} or the bare data object)
    gold.jsonl      gold items, one a line: {"data": {...}, "answer": [<Label Studio result regions>]}
    policy.yaml     the crowdgate routing policy for projects of this type

``ConfigFolder.load(path)`` reads them all and raises :class:`ConfigFolderError` for the first problem, as
``<file>:<line>: <problem>``: a missing file, an XML that does not parse (the parser's line), a JSONL line that is
not JSON or whose data lacks a field the config's objects read (``$text`` needs ``text``), a gold answer that
names a control or a label the config does not have, a policy that does not parse or that the policy parser
refuses (the line of the key it names). The policy parser lives above this layer (``routing.policy``), so the
caller passes it in as ``check_policy``. :func:`load_tasks_file` reads a tasks file in JSONL, JSON (a list) or
CSV (columns = data fields) with the same errors. Nothing here touches the network.

Why the version sits in a visible element: Label Studio 1.23.2 sanitises ``expert_instruction`` (measured: it drops
comments and the ``content``, ``data-*``, ``id`` and ``style`` attributes, and keeps ``class``), so a ``<meta>``
or a comment would not survive the trip; an element of class ``guideline-version`` does, and
:func:`guideline_version` reads it back from what Label Studio stores.
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from core.label_config import Control, LabelConfig, LabelConfigError

__all__ = [
    "FILES",
    "ConfigFolder",
    "ConfigFolderError",
    "GoldItem",
    "PolicyCheck",
    "check_task_data",
    "folder_paths",
    "guideline_version",
    "load_tasks_file",
]

FILES = ("config.xml", "guideline.html", "tasks.jsonl", "gold.jsonl", "policy.yaml")
VERSION_CLASS = "guideline-version"

PolicyCheck = Callable[[str], object]
"""Validates a policy's YAML text (``routing.policy.parse_policy``); raises when it refuses it. An exception
with ``errors`` (``"key.path: message"`` lines, as ``PolicyError`` has) is reported at the line of that key."""

# Result value keys that hold option values, per control type; taxonomy holds paths of them.
_OPTION_KEYS = {"choices": "choices", "labels": "labels", "rectanglelabels": "rectanglelabels",
                "polygonlabels": "polygonlabels", "keypointlabels": "keypointlabels",
                "ellipselabels": "ellipselabels", "brushlabels": "brushlabels", "hypertextlabels": "htmllabels",
                "paragraphlabels": "paragraphlabels", "timeserieslabels": "timeserieslabels",
                "taxonomy": "taxonomy"}


class ConfigFolderError(ValueError):
    """A problem in one file of a config folder or a tasks file; ``str()`` is ``<file>:<line>: <problem>``."""

    def __init__(self, path: str | Path, line: int, problem: str) -> None:
        self.path = Path(path)
        self.line = int(line)
        self.problem = problem
        super().__init__(f"{self.path}:{self.line}: {problem}")


@dataclass(frozen=True)
class GoldItem:
    """A task with its known answer: ``answer`` is a Label Studio result (a list of regions)."""

    data: dict[str, Any]
    answer: list[dict[str, Any]]


@dataclass(frozen=True)
class ConfigFolder:
    """One task type's folder, read and validated (see the module docstring)."""

    name: str
    path: Path
    label_config: str
    config: LabelConfig
    guideline_html: str
    guideline_version: str
    sample_tasks: list[dict[str, Any]]
    gold: list[GoldItem]
    policy_text: str

    @classmethod
    def load(cls, path: str | Path, *, check_policy: PolicyCheck | None = None) -> ConfigFolder:
        """Read and check the folder at ``path``; :class:`ConfigFolderError` for the first problem found."""
        path = Path(path)
        if not path.is_dir():
            raise ConfigFolderError(path, 0, "not a config folder (expected a directory holding "
                                    + ", ".join(FILES) + ")")
        texts = {name: _read(path / name) for name in FILES}
        config = _parse_config(path / "config.xml", texts["config.xml"])
        version = _guideline_version(path / "guideline.html", texts["guideline.html"])
        tasks = load_tasks_file(path / "tasks.jsonl", config)
        gold = _parse_gold(path / "gold.jsonl", texts["gold.jsonl"], config)
        _check_policy(path / "policy.yaml", texts["policy.yaml"], check_policy)
        return cls(
            name=path.resolve().name,
            path=path,
            label_config=texts["config.xml"],
            config=config,
            guideline_html=texts["guideline.html"],
            guideline_version=version,
            sample_tasks=tasks,
            gold=gold,
            policy_text=texts["policy.yaml"],
        )


def folder_paths(root: str | Path) -> list[Path]:
    """The config folders under ``root`` (each subfolder holding a ``config.xml``), sorted by name."""
    return sorted(p for p in Path(root).iterdir() if (p / "config.xml").is_file())


# -- files -----------------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    if not path.is_file():
        raise ConfigFolderError(path, 0, "file missing")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigFolderError(path, line, f"not UTF-8 text ({exc.reason})") from None


def _line_of(text: str, needle: str) -> int:
    """The first line holding ``needle`` (1 when none does): where a named tag or key is written."""
    index = text.find(needle)
    return text.count("\n", 0, index) + 1 if index >= 0 else 1


# -- config.xml ------------------------------------------------------------------------------------------


def _parse_config(path: Path, xml: str) -> LabelConfig:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        line, _column = exc.position
        raise ConfigFolderError(path, line, f"XML does not parse: {exc}") from None
    names = [str(el.get("name")) for el in root.iter() if el.get("name") is not None]
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:  # results address tags by name, so a second tag of the same name is ambiguous
        needle = f'name="{twice}"'
        second = xml.find(needle, xml.find(needle) + 1)
        line = xml.count("\n", 0, second) + 1 if second >= 0 else 1
        raise ConfigFolderError(path, line, f"a second tag is named {twice!r}: tag names must be unique")
    try:
        config = LabelConfig.parse(xml)
    except LabelConfigError as exc:
        raise ConfigFolderError(path, 1, str(exc)) from None
    if not config.controls:
        raise ConfigFolderError(path, 1, "the config has no control tag (nothing for an annotator to answer)")
    for control in config.controls:
        missing = [n for n in control.to_name if n not in {o.name for o in control.objects}]
        if missing:
            raise ConfigFolderError(path, _line_of(xml, f'name="{control.name}"'),
                                    f"control {control.name!r} points at {missing}, which no object tag is named")
    try:
        config.interface.validate()
    except Exception as exc:  # the SDK's validate raises its own errors and bare Exceptions
        raise ConfigFolderError(path, _line_of_quoted(xml, str(exc)), f"Label Studio refuses the config: {exc}") \
            from None
    return config


def _line_of_quoted(xml: str, message: str) -> int:
    """The line of the first attribute value quoted in the SDK's ``message`` (1 when none is found)."""
    for quoted in re.findall(r"['\"]([^'\"]+)['\"]", message):
        if f'"{quoted}"' in xml:
            return _line_of(xml, f'"{quoted}"')
    return 1


# -- guideline.html --------------------------------------------------------------------------------------


class _VersionElement(HTMLParser):
    """The text of the first element of class ``guideline-version``, and the line it starts on."""

    def __init__(self) -> None:
        super().__init__()
        self.text: str | None = None
        self.line = 0
        self._depth = 0  # > 0 while inside that element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._depth:
            self._depth += 1
        elif self.text is None and VERSION_CLASS in (dict(attrs).get("class") or "").split():
            self.text, self.line, self._depth = "", self.getpos()[0], 1

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.text = (self.text or "") + data


_VERSION = re.compile(r"\bversion\s+([0-9]+(?:\.[0-9]+)*)\b", re.IGNORECASE)


def _find_version(html: str) -> tuple[str | None, int, str | None]:
    """(version, line, the element's text); version None when the element or its number is missing."""
    element = _VersionElement()
    element.feed(html)
    element.close()
    if element.text is None:
        return None, 1, None
    found = _VERSION.search(element.text)
    return (found.group(1) if found else None), element.line, element.text


def guideline_version(html: str) -> str | None:
    """The version a guideline states in its ``class="guideline-version"`` element ("Guideline version 3"),
    or None; works on the HTML Label Studio stores as ``expert_instruction``."""
    return _find_version(html)[0]


def _guideline_version(path: Path, html: str) -> str:
    if not html.strip():
        raise ConfigFolderError(path, 1, "the guideline is empty")
    version, line, text = _find_version(html)
    if text is None:
        raise ConfigFolderError(path, 1, f'no version: add <p class="{VERSION_CLASS}">Guideline version 1</p>')
    if version is None:
        raise ConfigFolderError(path, line, f"the {VERSION_CLASS} element must say 'version <number>' "
                                f"(like 'Guideline version 3'), got {text.strip()!r}")
    return version


# -- tasks -----------------------------------------------------------------------------------------------


def _needed_fields(config: LabelConfig) -> dict[str, str]:
    """Task data key -> the object tag that reads it."""
    return {o.data_key: o.name for o in config.objects if o.data_key}


def check_task_data(data: Any, config: LabelConfig) -> str | None:
    """The problem with one task's ``data`` for ``config`` (not an object, a field an object reads missing),
    or None when it fits."""
    if not isinstance(data, Mapping):
        return f"task data must be a JSON object, got {type(data).__name__}"
    missing = {key: name for key, name in _needed_fields(config).items() if key not in data}
    if missing:
        parts = ", ".join(f"{k!r} (read by ${k} of the {n!r} tag)" for k, n in missing.items())
        return f"task data lacks {parts}; it has {sorted(data)}"
    return None


def _as_task(obj: Any) -> Any:
    """``{"data": {...}, ...}`` as it is; a bare data object wrapped, as Label Studio's import does."""
    if isinstance(obj, Mapping) and isinstance(obj.get("data"), Mapping):
        return dict(obj)
    return {"data": obj}


def _jsonl(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line, object, problem) for every non-blank line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield number, None, f"not JSON: {exc.msg} (column {exc.colno})"


def _json_list(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line, element, problem) for each element of a top-level JSON list, with the line it starts on."""
    decoder = json.JSONDecoder()

    def line_at(index: int) -> int:
        return text.count("\n", 0, index) + 1

    def skip(index: int) -> int:
        while index < len(text) and text[index].isspace():
            index += 1
        return index

    index = skip(0)
    if index >= len(text) or text[index] != "[":
        yield line_at(index), None, "a JSON tasks file must hold one list of tasks"
        return
    index = skip(index + 1)
    if index < len(text) and text[index] == "]":
        return
    while True:
        try:
            element, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            yield exc.lineno, None, f"not JSON: {exc.msg} (column {exc.colno})"
            return
        yield line_at(index), element, None
        index = skip(end)
        if index < len(text) and text[index] == ",":
            index = skip(index + 1)
        elif index < len(text) and text[index] == "]":
            if skip(index + 1) < len(text):
                yield line_at(skip(index + 1)), None, "not JSON: extra data after the list"
            return
        else:
            yield line_at(index), None, "not JSON: expected ',' or ']' after a task"
            return


def _csv_rows(text: str) -> Iterator[tuple[int, Any, str | None]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or any(not (f or "").strip() for f in reader.fieldnames):
        yield 1, None, "a CSV tasks file needs a header row naming every column (the task data fields)"
        return
    line = reader.line_num
    try:
        for row in reader:
            if None in row:
                yield line + 1, None, f"more values than the {len(reader.fieldnames)} columns of the header"
                return
            yield line + 1, {k: v for k, v in row.items() if v is not None}, None
            line = reader.line_num
    except csv.Error as exc:
        yield reader.line_num, None, f"not CSV: {exc}"


def load_tasks_file(path: str | Path, config: LabelConfig) -> list[dict[str, Any]]:
    """Tasks (``{"data": {...}, ...}``) from a JSONL (``.jsonl``/``.ndjson``), JSON (``.json``, one list) or
    CSV (``.csv``, a header row of data fields) file, each checked against ``config``; raises
    :class:`ConfigFolderError` with the file and line of the first problem. Blank JSONL lines are skipped."""
    path = Path(path)
    text = _read(path)
    suffix = path.suffix.lower()
    readers = {".jsonl": _jsonl, ".ndjson": _jsonl, ".json": _json_list, ".csv": _csv_rows}
    if suffix not in readers:
        raise ConfigFolderError(path, 0, f"unknown tasks file type {suffix or '(none)'!r}: use "
                                ".jsonl, .json or .csv")
    tasks = []
    for line, obj, problem in readers[suffix](text):
        if problem is None:
            task = _as_task(obj)
            problem = check_task_data(task["data"], config)
        if problem is not None:
            raise ConfigFolderError(path, line, problem)
        tasks.append(task)
    if not tasks:
        raise ConfigFolderError(path, 1, "no tasks in the file")
    return tasks


# -- gold.jsonl ------------------------------------------------------------------------------------------


def _region_problem(region: Any, config: LabelConfig) -> str | None:
    if not isinstance(region, Mapping):
        return f"an answer region must be a JSON object, got {type(region).__name__}"
    name = region.get("from_name")
    control = config.get(str(name)) if name is not None else None
    if control is None:
        return f"answer names control {name!r}, which the config does not have (it has {list(config.by_name)})"
    to_name = region.get("to_name")
    if to_name not in control.to_name and to_name != control.name:  # Pairwise answers to its own name
        return f"answer's to_name {to_name!r} is not a target of control {control.name!r} ({list(control.to_name)})"
    kind = str(region.get("type", "")).lower()
    if kind != control.type:
        return f"answer's type {region.get('type')!r} is not control {control.name!r}'s type {control.type!r}"
    value = region.get("value")
    if not isinstance(value, Mapping):
        return f"answer of control {control.name!r} has no value object"
    return _label_problem(value, control)


def _label_problem(value: Mapping[str, Any], control: Control) -> str | None:
    key = _OPTION_KEYS.get(control.type)
    if key is None or not control.options:
        return None
    given = value.get(key)
    if not isinstance(given, list) or not given:
        return f"answer of control {control.name!r} needs a non-empty list under {key!r}"
    flat = [v for path in given for v in path] if control.type == "taxonomy" else given
    unknown = [v for v in flat if v not in control.labels]
    if unknown:
        return f"answer gives {unknown} for control {control.name!r}, which has only {list(control.labels)}"
    return None


def _parse_gold(path: Path, text: str, config: LabelConfig) -> list[GoldItem]:
    items = []
    for line, obj, problem in _jsonl(text):
        if problem is None:
            problem = _gold_problem(obj, config)
        if problem is not None:
            raise ConfigFolderError(path, line, problem)
        items.append(GoldItem(data=dict(obj["data"]), answer=list(obj["answer"])))
    if not items:
        raise ConfigFolderError(path, 1, "no gold items in the file")
    return items


def _gold_problem(obj: Any, config: LabelConfig) -> str | None:
    if not isinstance(obj, Mapping) or "data" not in obj or "answer" not in obj:
        return 'a gold item is {"data": {...}, "answer": [...regions...]}'
    problem = check_task_data(obj["data"], config)
    if problem is not None:
        return problem
    answer = obj["answer"]
    if not isinstance(answer, list) or not answer:
        return "a gold answer is a non-empty list of result regions"
    for region in answer:
        problem = _region_problem(region, config)
        if problem is not None:
            return problem
    return None


# -- policy.yaml -----------------------------------------------------------------------------------------


def _check_policy(path: Path, text: str, check_policy: PolicyCheck | None) -> None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigFolderError(path, line, f"YAML does not parse: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigFolderError(path, 1, f"YAML does not parse: {exc}") from None
    if check_policy is None:
        return
    try:
        check_policy(text)
    except Exception as exc:  # whatever the caller's parser raises is a refusal, reported with its words
        errors = [str(e) for e in getattr(exc, "errors", None) or [str(exc)]]
        first = errors[0]
        key_path = first.split(":", 1)[0] if ":" in first else ""
        raise ConfigFolderError(path, _key_line(root, key_path), "policy refused: " + "; ".join(errors)) from None


def _key_line(root: yaml.Node | None, key_path: str) -> int:
    """The line of the deepest node of ``key_path`` (``tiers[1].promote.min_gold``) that the YAML has."""
    node, line = root, (root.start_mark.line + 1 if root is not None else 1)
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", key_path):
        if isinstance(node, yaml.SequenceNode) and token.startswith("["):
            index = int(token[1:-1])
            if index >= len(node.value):
                break
            node = node.value[index]
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == token), None)
            if found is None:
                break
            line = found[0].start_mark.line + 1
            node = found[1]
        else:
            break
    return line
