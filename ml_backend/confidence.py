"""How sure an LLM answer is: log-probability confidence of a structured answer, and calibration error.

:func:`logprob_confidence` scores a parsed answer from the tokens' log-probabilities the server returned (a
choice's probability normalised over the allowed options where the server listed alternatives);
:func:`expected_calibration_error` measures how well such scores match accuracy against gold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ml_backend.structured import ConfigPlan, ParsedAnswer

# How many alternatives per token are asked for (and how many a cut-off list shows).
TOP_LOGPROBS = 5
# Tags whose confidence is the joint probability of the value's tokens; free-form ones use the per-token mean.
_DISCRETE = {"choices", "pairwise", "rating", "taxonomy", "number"}


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool | int], bins: int = 10
) -> float:
    """ECE with equal-width bins on [0, 1]: the count-weighted mean |accuracy − mean confidence| per bin."""
    if len(confidences) != len(correct):
        raise ValueError("confidences and correct differ in length")
    n = len(confidences)
    if n == 0:
        return 0.0
    totals = [[0, 0.0, 0.0] for _ in range(bins)]  # count, sum confidence, sum correct
    for conf, ok in zip(confidences, correct, strict=True):
        c = min(max(float(conf), 0.0), 1.0)
        b = min(int(c * bins), bins - 1)
        totals[b][0] += 1
        totals[b][1] += c
        totals[b][2] += 1.0 if ok else 0.0
    return sum(abs(s_ok / cnt - s_conf / cnt) * cnt / n for cnt, s_conf, s_ok in totals if cnt)


def single_options(c: Any) -> list[str] | None:
    """The strings a single-valued discrete control can take in the answer JSON, else None."""
    if c.tag == "choices" and not c.multiple:
        return list(c.options)
    if c.tag == "pairwise":
        return ["left", "right"]
    if c.tag == "rating":
        return [str(i) for i in range(1, c.max_rating + 1)]
    return None


def option_probability(
    content: str, tokens: Sequence[Any], spans: list[tuple[int, int]], at: int, value: str, options: list[str]
) -> float:
    """Probability of ``value`` among ``options``, token by token where the server listed alternatives.

    At each token of the value, the listed alternatives that spell the chosen option are weighed against all
    that still spell an allowed option — what grammar-constrained decoding does when it masks the other
    tokens; once only the chosen option is left, a step costs nothing. Servers such as llama.cpp report
    logprobs from before the grammar, so the raw product would count every forbidden token against the
    answer. Without alternatives the raw probability is used.
    """
    end = at + len(value)
    total = 0.0
    for i, (ts, te) in enumerate(spans):
        if not (ts < end and at < te):
            continue
        token = tokens[i]
        lp = float(token.logprob)
        alternatives = getattr(token, "top_logprobs", None) or []
        if not alternatives:
            total += lp
            continue
        done = value[: max(0, ts - at)]  # the value's characters before this token
        lead = content[ts:at] if ts < at else ""  # e.g. an opening quote inside the same token
        renderings = [lead + o[len(done):] for o in options if o.startswith(done)]

        def spells(text: str, rendering: str) -> bool:
            return bool(text) and (rendering.startswith(text) or text.startswith(rendering))

        seen: dict[str, float] = {}
        for alt in alternatives:
            text = alt.token if isinstance(alt.token, str) else ""
            if any(spells(text, r) for r in renderings):
                seen.setdefault(text, float(alt.logprob))
        seen.setdefault(str(token.token), lp)
        mass = sum(math.exp(v) for v in seen.values())
        # Other tokenisations of the chosen option (" ent" beside " entail") count for it, not against it.
        mine = lead + value[len(done):]
        chosen_mass = sum(math.exp(v) for t, v in seen.items() if spells(t, mine))
        if len(alternatives) >= TOP_LOGPROBS:
            # The list was cut off: an option it does not show may still hold up to the smallest listed
            # probability. Counting that keeps the score from claiming certainty it cannot see.
            floor = min(math.exp(float(a.logprob)) for a in alternatives)
            mass += floor * sum(1 for r in renderings if not any(spells(t, r) for t in seen))
        total += math.log(chosen_mass / mass) if mass > 0 and chosen_mass > 0 else lp
    return math.exp(total)


def logprob_confidence(content: str, tokens: Sequence[Any], plan: ConfigPlan, parsed: ParsedAnswer) -> float:
    """Confidence of an answer from its tokens' log-probabilities.

    Per control, the tokens that spell its value in the answer JSON are found by character position. A
    single choice, pairwise pick or rating scores the probability of the chosen option among the allowed
    ones (see :func:`option_probability`); other discrete answers (multi-label, taxonomy) the joint
    probability of their tokens; spans and free text, whose length varies, the per-token geometric mean.
    The answer's score is its weakest control's.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for t in tokens:
        piece = t.token if isinstance(t.token, str) else ""
        spans.append((pos, pos + len(piece)))
        pos += len(piece)
    if not spans:
        return 0.0
    logprobs = [float(t.logprob) for t in tokens]

    def overlapping(start: int, end: int) -> list[float]:
        return [logprobs[i] for i, (s, e) in enumerate(spans) if s < end and start < e]

    key_positions = sorted(
        (p, c) for c in plan.controls if (p := content.find(json.dumps(c.name, ensure_ascii=False))) >= 0
    )
    per_control: list[float] = []
    for i, (kpos, c) in enumerate(key_positions):
        region_end = key_positions[i + 1][0] if i + 1 < len(key_positions) else len(content)
        value_start = kpos + len(json.dumps(c.name, ensure_ascii=False))
        shown_values = parsed.value_texts.get(c.name, [])
        options = single_options(c)
        if options is not None and len(shown_values) == 1:
            needle = str(shown_values[0])
            at = content.find(json.dumps(needle, ensure_ascii=False)[1:-1], value_start, region_end)
            if at >= 0:
                per_control.append(option_probability(content, tokens, spans, at, needle, options))
                continue
        chosen: list[float] = []
        cursor = value_start
        for shown in shown_values:
            needle = json.dumps(shown, ensure_ascii=False)[1:-1] if isinstance(shown, str) else str(shown)
            at = content.find(needle, cursor, region_end)
            if at < 0:
                continue
            chosen.extend(overlapping(at, at + len(needle)))
            cursor = at + len(needle)
        if not chosen:  # e.g. an empty span list: score the tokens of the whole value
            chosen = overlapping(value_start, region_end)
        if not chosen:
            continue
        if c.tag in _DISCRETE:
            per_control.append(math.exp(sum(chosen)))
        else:
            per_control.append(math.exp(sum(chosen) / len(chosen)))
    if not per_control:
        return math.exp(sum(logprobs) / len(logprobs))
    return min(per_control)
