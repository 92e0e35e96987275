"""Mask personal data in task text before it leaves for an external LLM endpoint.

Detected values are replaced with numbered placeholders such as ``[EMAIL_1]``; the same value gets the same
placeholder within one :class:`Redaction`, so the model still sees that two mentions are one entity. The
mapping stays in this process: :meth:`Redaction.restore` puts the originals back into the model's answer
(span texts for offset location, free-text answers) and nothing else ever sees it.

Kinds: ``email``, ``phone``, ``card`` (13–19 digits that pass the Luhn check), ``iban`` (ISO 13616 mod-97
check), ``account`` (8–18 digit runs that are neither a card nor a phone number), ``ip`` (IPv4) and ``ssn``
(US ``123-45-6789``). The patterns aim at recall on common formats, not at being a full PII detector.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ALL_KINDS: tuple[str, ...] = ("email", "iban", "card", "ssn", "ip", "phone", "account")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# IBAN: two letters, two check digits, then 11-30 alphanumerics, optionally grouped by spaces.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
# Card: 13-19 digits, optionally grouped with spaces or dashes.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
_IP = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")
# Phone: optional +country, then digit groups split by spaces, dots, dashes or parentheses; 7-15 digits.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)")
_ACCOUNT = re.compile(r"(?<![\w-])\d{8,18}(?![\w-])")


def luhn_ok(digits: str) -> bool:
    """Luhn checksum of a digit string (card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _find_card(text: str) -> Iterable[tuple[int, int]]:
    for m in _CARD.finditer(text):
        d = _digits(m.group())
        if 13 <= len(d) <= 19 and luhn_ok(d):
            yield m.span()


def _find_iban(text: str) -> Iterable[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        # The regex may swallow a trailing grouped word; shrink until the checksum holds.
        s = m.group()
        while len(s.replace(" ", "")) >= 15:
            if iban_ok(s):
                yield m.start(), m.start() + len(s)
                break
            s = s[:-1].rstrip()


_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def _find_phone(text: str) -> Iterable[tuple[int, int]]:
    for m in _PHONE.finditer(text):
        s = m.group()
        groups = re.findall(r"\d+", s)
        n = sum(len(g) for g in groups)
        # Phone numbers show structure (a + prefix, an area code in parentheses, three groups, or a dashed
        # pair); a bare pair of numbers or a date is far more often something else.
        shaped = s.startswith("+") or "(" in s or len(groups) >= 3 or (len(groups) == 2 and "-" in s)
        if 7 <= n <= 15 and shaped and not _DATE.fullmatch(s):
            yield m.span()


def _simple(pattern: re.Pattern[str]) -> Callable[[str], Iterable[tuple[int, int]]]:
    def find(text: str) -> Iterable[tuple[int, int]]:
        return (m.span() for m in pattern.finditer(text))

    return find


# Priority order: earlier kinds win overlaps (a Luhn-valid card is a card, not a phone number).
_FINDERS: dict[str, Callable[[str], Iterable[tuple[int, int]]]] = {
    "email": _simple(_EMAIL),
    "iban": _find_iban,
    "card": _find_card,
    "ssn": _simple(_SSN),
    "ip": _simple(_IP),
    "phone": _find_phone,
    "account": _simple(_ACCOUNT),
}


def parse_kinds(setting: str | None) -> tuple[str, ...]:
    """``CROWDGATE_REDACT`` value to the kinds to mask: "off"/"" → none, "on"/"all" → all, else a comma list."""
    value = (setting or "").strip().lower()
    if value in ("", "off", "0", "false", "no", "none"):
        return ()
    if value in ("on", "1", "true", "yes", "all"):
        return ALL_KINDS
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in _FINDERS]
    if unknown:
        raise ValueError(f"unknown redaction kinds {unknown}; known: {list(ALL_KINDS)}")
    return kinds


@dataclass
class Redaction:
    """One redaction session (one task): placeholders are stable within it and restorable."""

    kinds: tuple[str, ...] = ALL_KINDS
    mapping: dict[str, str] = field(default_factory=dict)  # placeholder -> original
    _reverse: dict[tuple[str, str], str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def _placeholder(self, kind: str, original: str) -> str:
        key = (kind, original)
        if key not in self._reverse:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            ph = f"[{kind.upper()}_{self._counts[kind]}]"
            self._reverse[key] = ph
            self.mapping[ph] = original
        return self._reverse[key]

    def mask(self, text: str) -> str:
        """Replace every detected value in ``text`` with its placeholder."""
        if not self.kinds or not text:
            return text
        taken: list[tuple[int, int, str]] = []
        for kind in ALL_KINDS:
            if kind not in self.kinds:
                continue
            for start, end in _FINDERS[kind](text):
                if any(start < e and s < end for s, e, _ in taken):
                    continue
                taken.append((start, end, kind))
        if not taken:
            return text
        taken.sort()
        out: list[str] = []
        pos = 0
        for start, end, kind in taken:
            out.append(text[pos:start])
            out.append(self._placeholder(kind, text[start:end]))
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def mask_data(self, data: Any) -> Any:
        """Mask every string inside a JSON-like value (task data), leaving its structure alone."""
        if isinstance(data, str):
            return self.mask(data)
        if isinstance(data, dict):
            return {k: self.mask_data(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.mask_data(v) for v in data]
        return data

    def restore(self, text: str) -> str:
        """Put the original values back in place of this session's placeholders."""
        if not self.mapping or "[" not in text:
            return text
        return re.sub(r"\[[A-Z]+_\d+\]", lambda m: self.mapping.get(m.group(), m.group()), text)

    def restore_data(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.restore(data)
        if isinstance(data, dict):
            return {k: self.restore_data(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.restore_data(v) for v in data]
        return data

    @property
    def count(self) -> int:
        """How many distinct values were masked."""
        return len(self.mapping)
