"""Zero-shot choice pre-labels: the option whose name is nearest to the task text in embedding space.

The baseline model that needs no training data and no LLM (in the spirit of embedding-similarity zero-shot
classification, Yin, Hay and Roth, EMNLP 2019, here with plain cosine similarity): it embeds the task text
and every option (its ``hint`` or ``alias`` when the config gives one, else its value) with all-MiniLM-L6-v2
and returns the nearest option, with a softmax over similarities as its score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.label_config import LabelConfig
from ml_backend import embeddings
from ml_backend.labeling import choice_region, choice_targets, task_text

MODEL_VERSION = "crowdgate-zeroshot-minilm-1"
# Cosine similarities of MiniLM sit in a narrow band; a low temperature spreads them into probabilities.
TEMPERATURE = 0.05


def _option_texts(label_config: str, control: str) -> list[str]:
    # An option's hint describes it best; else its stored value (the alias when it has one), as results hold it.
    return [o.hint or o.value for o in LabelConfig.parse(label_config).control(control).options]


class ZeroShotChoices:
    model_version = MODEL_VERSION

    def predict(self, tasks: list[dict[str, Any]], label_config: str) -> list[dict[str, Any]]:
        """One prediction per task, in order: ``result`` regions, ``score``, ``model_version``."""
        targets = choice_targets(label_config)
        results: list[list[dict[str, Any]]] = [[] for _ in tasks]
        scores: list[list[float]] = [[] for _ in tasks]
        for target in targets:
            texts = [task_text(task, target.data_keys) for task in tasks]
            rows = [i for i, text in enumerate(texts) if text]
            if not rows:
                continue
            vectors = embeddings.embed([texts[i] for i in rows])
            options = embeddings.embed(_option_texts(label_config, target.control))
            logits = vectors @ options.T / TEMPERATURE
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            for row, p in zip(rows, probs, strict=True):
                best = int(p.argmax())
                results[row].append(choice_region(label_config, target.control, [target.labels[best]]))
                scores[row].append(float(p[best]))
        return [
            {
                "result": result,
                "score": round(float(np.mean(score)), 4) if score else 0.0,
                "model_version": MODEL_VERSION,
            }
            for result, score in zip(results, scores, strict=True)
        ]
