"""Redaction of personal data before text leaves for an external LLM endpoint."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from ml_backend.cache import MemoryCache
from ml_backend.llm import LLMPredictor, LLMSettings
from ml_backend.redaction import ALL_KINDS, Redaction, iban_ok, luhn_ok, parse_kinds
from tests.openai_stub import OpenAIStub, last_user_text


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("5500005555555559")
    assert not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and iban_ok("DE89370400440532013000")
    assert not iban_ok("GB82 WEST 1234 5698 7654 33")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe+tag@mail.example.org today", "EMAIL"),
        ("call +44 20 7946 0958 now", "PHONE"),
        ("call (555) 123-4567 now", "PHONE"),
        ("call 555-123-4567 now", "PHONE"),
        ("card 4111 1111 1111 1111 expires", "CARD"),
        ("card 4111-1111-1111-1111 expires", "CARD"),
        ("pay to GB82 WEST 1234 5698 7654 32 please", "IBAN"),
        ("pay to DE89370400440532013000 please", "IBAN"),
        ("ssn 123-45-6789 on file", "SSN"),
        ("from 10.0.0.254 at night", "IP"),
        ("account no. 000123456789 closed", "ACCOUNT"),
    ],
)
def test_each_kind_is_masked_and_restored(text: str, kind: str) -> None:
    r = Redaction()
    masked = r.mask(text)
    assert f"[{kind}_1]" in masked, masked
    assert r.restore(masked) == text


def test_not_masked() -> None:
    r = Redaction()
    text = "On 2023-01-15 the price was 1234.56 for 3 items; card 4111 1111 1111 1112 is invalid; year 2024."
    assert r.mask(text) == text
    assert r.count == 0


def test_same_value_same_placeholder_and_kinds_filter() -> None:
    r = Redaction(("email",))
    masked = r.mask("a@b.io wrote to c@d.io and a@b.io; phone 555-123-4567")
    assert masked == "[EMAIL_1] wrote to [EMAIL_2] and [EMAIL_1]; phone 555-123-4567"
    assert r.mapping == {"[EMAIL_1]": "a@b.io", "[EMAIL_2]": "c@d.io"}
    assert r.mask_data({"t": ["x a@b.io", {"y": "c@d.io"}], "n": 3}) == {
        "t": ["x [EMAIL_1]", {"y": "[EMAIL_2]"}],
        "n": 3,
    }


def test_parse_kinds() -> None:
    assert parse_kinds("off") == () and parse_kinds("") == ()
    assert parse_kinds("on") == ALL_KINDS
    assert parse_kinds("email, card") == ("email", "card")
    with pytest.raises(ValueError):
        parse_kinds("email,passport")


def test_nothing_personal_reaches_the_endpoint_and_spans_map_back() -> None:
    text = "Contact Jane at jane@corp.com or +1 (555) 123-4567. Jane's card: 4111 1111 1111 1111."
    cfg = """<View><Labels name="pii" toName="text"><Label value="PERSON"/><Label value="CONTACT"/></Labels>
      <Text name="text" value="$text"/></View>"""

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        seen = last_user_text(body)
        # The model sees placeholders and tags them; the engine must restore and locate the originals.
        return {"pii": [{"text": "Jane", "label": "PERSON"}, {"text": "[EMAIL_1]", "label": "CONTACT"},
                        {"text": "[PHONE_1]", "label": "CONTACT"}] if "[EMAIL_1]" in seen else []}

    with OpenAIStub(answer) as stub:
        settings = LLMSettings(base_url=stub.base_url, model=f"m-{uuid.uuid4().hex[:6]}", samples=1,
                               redact=ALL_KINDS)
        p = LLMPredictor(settings, cache=MemoryCache())
        out = p.predict([{"id": 1, "data": {"text": text}}], cfg, instructions="Escalate to boss@corp.com")
        sent = json.dumps(stub.requests)
    for secret in ("jane@corp.com", "555) 123-4567", "4111 1111 1111 1111", "boss@corp.com"):
        assert secret not in sent
    spans = sorted((r["value"]["text"], r["value"]["labels"][0]) for r in out[0]["result"])
    assert spans == [("+1 (555) 123-4567", "CONTACT"), ("Jane", "PERSON"), ("Jane", "PERSON"),
                     ("jane@corp.com", "CONTACT")]
    for r in out[0]["result"]:
        assert text[r["value"]["start"] : r["value"]["end"]] == r["value"]["text"]
    assert p.counters()["redacted_values"] == 4


def test_textarea_answer_gets_originals_back() -> None:
    cfg = '<View><Text name="text" value="$text"/><TextArea name="summary" toName="text"/></View>'
    with OpenAIStub(lambda b: {"summary": "Customer [EMAIL_1] asks for a refund."}) as stub:
        settings = LLMSettings(base_url=stub.base_url, model=f"m-{uuid.uuid4().hex[:6]}", samples=1,
                               redact=("email",))
        out = LLMPredictor(settings, cache=MemoryCache()).predict(
            [{"id": 1, "data": {"text": "From a@b.io: refund me"}}], cfg
        )
    assert out[0]["result"][0]["value"]["text"] == ["Customer a@b.io asks for a refund."]
