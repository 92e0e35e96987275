"""LLM pre-labelling benchmark on RTE (text + hypothesis, gold 1 = entailment, 0 = no entailment).

Default (throughput): 200 RTE tasks against the in-process OpenAI-compatible stub server with a fixed
latency per call (200 ms). crowdgate's ``LLMPredictor`` (concurrent, cached) is timed against a sequential
client in the same run — the plain ``openai`` client sending the same requests one task at a time. A second
pass over the same tasks must make no model call (cache). Prints one JSON line
``{"tasks","seconds","sequential_seconds","speedup","second_pass_calls"}``.

With ``--endpoint URL --model M`` (quality): the same tasks against a real OpenAI-compatible endpoint;
prints accuracy against gold, the expected calibration error of the scores, mean score, how the scores were
obtained (logprobs or sample agreement), the structured-output mode found, tokens and time. ``--examples K``
puts K gold items (taken after the evaluated ones, classes alternating) in the prompt as worked examples.

    python bench/prelabel.py [--tasks 200] [--latency 0.2]
    python bench/prelabel.py --endpoint http://127.0.0.1:8080/v1 --model smollm2-135m [--tasks 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import openai  # noqa: E402

from ml_backend.cache import MemoryCache  # noqa: E402
from ml_backend.confidence import expected_calibration_error  # noqa: E402
from ml_backend.llm import LLMPredictor, LLMSettings, endpoint_state  # noqa: E402
from ml_backend.prompt import build_messages  # noqa: E402
from ml_backend.structured import build_plan  # noqa: E402
from tests.openai_stub import OpenAIStub, last_user_text  # noqa: E402

RTE_INLINE = """<View>
  <Header value="Read the text. Is the hypothesis definitely true given the text?"/>
  <Text name="text" value="$text"/>
  <Header value="Hypothesis"/>
  <Text name="hypothesis" value="$hypothesis"/>
  <Choices name="entailment" toName="text" choice="single" showInline="true" required="true">
    <Choice value="Entailment" alias="1" hint="The text makes the hypothesis true"/>
    <Choice value="No entailment" alias="0" hint="The hypothesis is false or not supported by the text"/>
  </Choices>
</View>"""


def rte_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (REPO / "data/crowd/rte.items.jsonl").read_text().splitlines() if line]


def load_rte(n: int) -> tuple[list[dict[str, Any]], list[str]]:
    rows = rte_rows()[:n]
    tasks = [{"id": i + 1, "data": {"text": r["text"], "hypothesis": r["hypothesis"]}} for i, r in enumerate(rows)]
    return tasks, [str(r["gold"]) for r in rows]


def gold_examples(k: int, skip: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """``k`` worked examples from items after the evaluated ones, alternating the two classes."""
    rows = rte_rows()[skip:]
    picked: list[dict[str, Any]] = []
    for label in ("1", "0") * k:
        row = next((r for r in rows if str(r["gold"]) == label and r not in picked), None)
        if row is not None and len(picked) < k:
            picked.append(row)
    return [
        ({"data": {"text": r["text"], "hypothesis": r["hypothesis"]}},
         [{"from_name": "entailment", "to_name": "text", "type": "choices", "value": {"choices": [str(r["gold"])]}}])
        for r in picked
    ]


def rte_config() -> str:
    path = REPO / "label_configs" / "rte" / "config.xml"
    return path.read_text() if path.is_file() else RTE_INLINE


def overlap_answer(body: dict[str, Any]) -> dict[str, Any]:
    """Stub model: entailment when most hypothesis words occur in the text (a lexical-overlap baseline)."""
    user = last_user_text(body)
    text = user.split("<text>")[-1].split("</text>")[0].lower().split()
    hyp = user.split("<hypothesis>")[-1].split("</hypothesis>")[0].lower().split()
    share = sum(w in text for w in hyp) / max(1, len(hyp))
    return {"entailment": "Entailment" if share > 0.75 else "No entailment"}


def throughput(n: int, latency: float, concurrency: int) -> dict[str, Any]:
    tasks, _ = load_rte(n)
    config = rte_config()
    with OpenAIStub(overlap_answer, latency_s=latency, logprobs=True) as stub:
        settings = LLMSettings(base_url=stub.base_url, model=f"bench-{uuid.uuid4().hex[:6]}", mode="auto",
                               concurrency=concurrency, samples=1)
        predictor = LLMPredictor(settings, cache=MemoryCache())
        started = time.perf_counter()
        first = predictor.predict(tasks, config, project="bench", deadline_s=0)
        seconds = time.perf_counter() - started
        assert all(p is not None for p in first), "every task should get a prediction"

        calls_before = stub.calls
        second = predictor.predict(tasks, config, project="bench", deadline_s=0)
        second_pass_calls = stub.calls - calls_before
        assert [p["result"][0]["value"] for p in first] == [p["result"][0]["value"] for p in second]

        # Sequential client: the same requests, one task at a time, no cache.
        client = openai.OpenAI(base_url=stub.base_url, api_key="x", max_retries=0)
        plan = build_plan(config)
        schema = plan.json_schema()
        started = time.perf_counter()
        for task in tasks:
            messages = build_messages(plan, plan.object_values(task["data"]))
            response = client.chat.completions.create(
                model=settings.model, messages=messages, temperature=0, logprobs=True, max_tokens=512,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "prelabel", "schema": schema, "strict": True}},
            )
            json.loads(response.choices[0].message.content or "{}")
        sequential = time.perf_counter() - started
        predictor.close()
    return {
        "tasks": n,
        "seconds": round(seconds, 3),
        "sequential_seconds": round(sequential, 3),
        "speedup": round(sequential / seconds, 2),
        "second_pass_calls": second_pass_calls,
    }


def quality(endpoint: str, model: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    tasks, gold = load_rte(n)
    settings = LLMSettings(
        base_url=endpoint, api_key=args.api_key, model=model, mode=args.mode, concurrency=args.concurrency,
        samples=args.samples, deadline_s=0, max_tokens=args.max_tokens, request_timeout_s=args.timeout,
        redact=(),
    )
    predictor = LLMPredictor(settings, cache=MemoryCache())
    started = time.perf_counter()
    examples = gold_examples(args.examples, n)
    details = predictor.predict_detailed(tasks, rte_config(), project="bench", deadline_s=0, examples=examples)
    seconds = time.perf_counter() - started
    scores, correct, answers = [], [], Counter()
    for d, g in zip(details, gold, strict=True):
        if d.prediction is None or not d.prediction["result"]:
            continue
        chosen = d.prediction["result"][0]["value"]["choices"][0]
        answers[chosen] += 1
        scores.append(d.prediction["score"])
        correct.append(chosen == g)
    answered = len(scores)
    counters = predictor.counters()
    predictor.close()
    return {
        "endpoint": endpoint,
        "model": model,
        "tasks": n,
        "examples": len(examples),
        "answered": answered,
        "accuracy": round(sum(correct) / answered, 4) if answered else None,
        "majority_baseline": round(max(gold.count("0"), gold.count("1")) / n, 4),
        "ece": round(expected_calibration_error(scores, correct), 4) if answered else None,
        "mean_score": round(sum(scores) / answered, 4) if answered else None,
        "answers": dict(answers),
        "score_source": dict(Counter(d.score_source for d in details if d.score_source)),
        "mode": endpoint_state(endpoint, model).mode,
        "statuses": dict(Counter(d.status for d in details)),
        "prompt_tokens": int(counters.get("prompt_tokens", 0)),
        "completion_tokens": int(counters.get("completion_tokens", 0)),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2, help="stub latency per call, seconds")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--endpoint", help="an OpenAI-compatible base URL: measure quality instead")
    parser.add_argument("--model", default="")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--examples", type=int, default=0, help="gold examples in the prompt (quality mode)")
    args = parser.parse_args()
    if args.endpoint:
        if not args.model:
            parser.error("--model is required with --endpoint")
        print(json.dumps(quality(args.endpoint, args.model, args.tasks, args)), flush=True)
    else:
        print(json.dumps(throughput(args.tasks, args.latency, args.concurrency)), flush=True)


if __name__ == "__main__":
    main()
