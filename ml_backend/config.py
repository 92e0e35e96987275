"""Settings of the ML backend, read from the environment (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class MLSettings:
    # Label Studio can call a backend with HTTP basic auth; both set means every request must carry it.
    basic_auth_user: str = ""
    basic_auth_password: str = ""
    max_body_bytes: int = 64 * 1024 * 1024
    # Redis queues training jobs; without it the backend still predicts but cannot train.
    redis_url: str = ""
    key_prefix: str = "cg"
    retrain_every: int = 50
    prelabel_min_tasks: int = 50  # an import at least this large is pre-labelled in the background (LLM only)

    @property
    def auth_required(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_password)

    @classmethod
    def from_env(cls) -> MLSettings:
        env = os.environ
        return cls(
            basic_auth_user=env.get("CROWDGATE_ML_BASIC_AUTH_USER", ""),
            basic_auth_password=env.get("CROWDGATE_ML_BASIC_AUTH_PASSWORD", ""),
            max_body_bytes=int(env.get("CROWDGATE_ML_MAX_BODY_BYTES", cls.max_body_bytes)),
            redis_url=env.get("REDIS_URL", ""),
            key_prefix=env.get("CROWDGATE_KEY_PREFIX", cls.key_prefix),
            retrain_every=int(env.get("CROWDGATE_RETRAIN_EVERY", cls.retrain_every)),
            prelabel_min_tasks=int(env.get("CROWDGATE_PRELABEL_MIN_TASKS", cls.prelabel_min_tasks)),
        )
