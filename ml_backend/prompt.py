"""Prompt templates for LLM pre-labelling.

``PROMPT_VERSION`` is part of every prediction's ``model_version`` and of the cache key: bump it whenever
the wording or layout below changes, so Label Studio shows the new predictions as a new version and no
stale cached answer is reused.

Layout: a system message with the labeling job (the config's headers, the project's instructions — Label
Studio's ``expert_instruction`` — and one line per field to fill), then each gold example as a user/assistant
pair, then the item to label. The answer format is described in words in every mode; in ``prompt`` mode the
JSON Schema is also spelled out because nothing constrains the decoder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ml_backend.structured import AnswerSpec, ConfigPlan

PROMPT_VERSION = "1"

SYSTEM_TEMPLATE = """You pre-label items for human annotators in Label Studio.
Read the item and fill in every field exactly as described, using only the allowed options.
{headers}{instructions}
Fields to fill:
{fields}

Reply with one JSON object that has exactly these keys: {keys}.{schema}"""


def _quote_list(values: Sequence[str]) -> str:
    return ", ".join(json.dumps(v, ensure_ascii=False) for v in values)


def _option_list(c: AnswerSpec) -> str:
    """Options as the model must write them, each with its hint from the config when there is one."""
    out = []
    for label in c.labels:
        name = json.dumps(c.show(label), ensure_ascii=False)
        hint = c.hints.get(label)
        out.append(f"{name} ({hint})" if hint else name)
    return ", ".join(out)


def describe_control(c: AnswerSpec) -> str:
    """One line telling the model what a control wants."""
    about = " and ".join(c.to_name)
    hint = f" Hint: {c.hint}" if c.hint else ""
    if c.tag == "choices":
        if c.multiple:
            return f'- "{c.name}": a list of every option that applies to {about}, from: {_option_list(c)}.{hint}'
        return f'- "{c.name}": exactly one option for {about}, one of: {_option_list(c)}.{hint}'
    if c.tag == "pairwise":
        left, right = c.to_name[0], c.to_name[1]
        return f'- "{c.name}": "left" if {left} is the better one, "right" if {right} is.{hint}'
    if c.tag == "rating":
        return f'- "{c.name}": an integer rating of {about} from 1 (worst) to {c.max_rating} (best).{hint}'
    if c.tag == "number":
        return f'- "{c.name}": a number for {about}.{hint}'
    if c.tag == "textarea":
        return f'- "{c.name}": free text about {about}, as the labeling instructions ask.{hint}'
    if c.tag == "taxonomy":
        options = [c.path_option(p) for p in c.paths]
        return (
            f'- "{c.name}": a list of the categories that apply to {about}, each written as its full path, '
            f"from: {_quote_list(options)}.{hint}"
        )
    if c.tag == "labels":
        return (
            f'- "{c.name}": a list of every span in {about} to tag, each as {{"text": the span copied exactly '
            f'from {about}, "label": one of {_option_list(c)}}}; an empty list if there is none.{hint}'
        )
    raise ValueError(c.tag)


def render_value(value: Any) -> str:
    """Task data as the model reads it: strings as they are, dialogues line by line, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        lines = []
        for v in value:
            speaker = v.get("author") or v.get("speaker") or v.get("role") or ""
            text = v.get("text") or v.get("content") or json.dumps(v, ensure_ascii=False)
            lines.append(f"{speaker}: {text}" if speaker else str(text))
        return "\n".join(lines)
    return json.dumps(value, ensure_ascii=False)


def render_item(plan: ConfigPlan, values: dict[str, Any], vision: bool) -> str | list[dict[str, Any]]:
    """The user message for one item: each object in config order, images as image parts when allowed."""
    parts: list[str] = []
    images: list[str] = []
    for o in plan.objects:
        value = values.get(o.name)
        if o.kind == "image":
            if vision and isinstance(value, str):
                images.append(value)
                parts.append(f"<{o.name}>(image {len(images)} attached)</{o.name}>")
            continue
        parts.append(f"<{o.name}>\n{render_value(value if value is not None else '')}\n</{o.name}>")
    text = "Item:\n" + "\n".join(parts)
    if not images:
        return text
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    content.extend({"type": "image_url", "image_url": {"url": url}} for url in images)
    return content


def build_messages(
    plan: ConfigPlan,
    values: dict[str, Any],
    *,
    instructions: str = "",
    examples: Sequence[tuple[dict[str, Any], dict[str, Any]]] = (),
    schema_in_prompt: bool = False,
    vision: bool = False,
) -> list[dict[str, Any]]:
    """Chat messages for one item. ``examples`` are (object values, answer) pairs, already redacted."""
    headers = "".join(f"Shown to annotators: {h}\n" for h in plan.headers)
    instr = f"Instructions from the project:\n{instructions.strip()}\n" if instructions.strip() else ""
    schema = ""
    if schema_in_prompt:
        schema = "\nThe JSON must match this JSON Schema:\n" + json.dumps(plan.json_schema(), ensure_ascii=False)
    system = SYSTEM_TEMPLATE.format(
        headers=headers,
        instructions=instr,
        fields="\n".join(describe_control(c) for c in plan.controls),
        keys=_quote_list([c.name for c in plan.controls]),
        schema=schema,
    )
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for example_values, answer in examples:
        messages.append({"role": "user", "content": render_item(plan, example_values, vision)})
        messages.append({"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)})
    messages.append({"role": "user", "content": render_item(plan, values, vision)})
    return messages
