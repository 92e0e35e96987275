"""crowdgate's settings: one object, read from the environment once per entry point and passed down.

    settings = use(Settings.from_env())     # crowdgate-web, -worker, -cron, the scripts: once, at start
    settings = Settings(redis_url=...)      # tests and embedding code build one directly
    current()                               # inside an RQ job: the settings of the process running it

Every variable is a field here with its one default, its environment name and what it means; the README's
configuration table is :func:`markdown_table` (a test keeps the two equal). Nothing else in crowdgate reads
``os.environ`` for its own settings.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A variable whose value cannot be read; the message names the variable."""


def _var(env: str, default: Any, used_by: str, doc: str, shown: str | None = None) -> Any:
    return field(default=default, metadata={"env": env, "used_by": used_by, "doc": doc, "shown": shown})


@dataclass(frozen=True)
class Settings:
    # -- shared ------------------------------------------------------------------------------------------
    redis_url: str = _var("REDIS_URL", "redis://127.0.0.1:6379/0", "web, worker, cron, scripts",
                          "Redis for RQ and crowdgate's state (turn AOF on in production)")
    key_prefix: str = _var("CROWDGATE_KEY_PREFIX", "cg", "web, worker, cron", "prefix of crowdgate's Redis keys")
    label_studio_url: str = _var("LABEL_STUDIO_URL", "", "web, worker, cron, scripts", "Label Studio's base URL",
                                 shown="—")
    label_studio_api_key: str = _var("LABEL_STUDIO_API_KEY", "", "web, worker, cron, scripts",
                                     "an admin token (legacy token or personal access token)", shown="—")
    log_level: str = _var("CROWDGATE_LOG_LEVEL", "INFO", "worker, cron", "log level")
    events_queue: str = _var("CROWDGATE_EVENTS_QUEUE", "crowdgate-events", "web, worker, cron",
                             "RQ queue of webhook events")
    routing_queue: str = _var("CROWDGATE_ROUTING_QUEUE", "crowdgate-routing", "worker, cron",
                              "RQ queue of routing actions")
    ml_queue: str = _var("CROWDGATE_ML_QUEUE", "crowdgate-ml", "web, worker",
                         "RQ queue of model training and background pre-labelling")
    # -- webhook receiver --------------------------------------------------------------------------------
    webhook_secret: str = _var("CROWDGATE_WEBHOOK_SECRET", "", "web, worker",
                               "shared secret Label Studio sends in the `X-Crowdgate-Secret` header",
                               shown="empty (refuse all)")
    webhook_secret_previous: str = _var("CROWDGATE_WEBHOOK_SECRET_PREVIOUS", "", "web",
                                        "the secret being rotated out, accepted beside the current one until "
                                        "every webhook sends the new one", shown="empty (none)")
    max_webhook_bytes: int = _var("CROWDGATE_MAX_WEBHOOK_BYTES", 10 * 1024 * 1024, "web",
                                  "larger webhook bodies get 413")
    # Label Studio waits 1 s for the webhook: a Redis that does not answer fast must not hold the submit.
    redis_timeout_s: float = _var("CROWDGATE_REDIS_TIMEOUT_S", 0.3, "web",
                                  "Redis socket timeout on the request path (Label Studio waits 1 s)")
    dedup_ttl_s: int = _var("CROWDGATE_DEDUP_TTL_S", 30 * 24 * 3600, "web",
                            "how long a delivered annotation version is remembered")
    inbox: str = _var("CROWDGATE_INBOX", "stream", "web, worker",
                      "`stream`: events wait in a Redis stream the worker drains in batches; `rq`: one RQ job per "
                      "event (the old path, several times slower)")
    # Routing is decided once per task and annotator of a batch: a backlog drains faster in larger batches.
    drain_batch: int = _var("CROWDGATE_DRAIN_BATCH", 1000, "worker",
                            "most events the worker scores, then routes, in one batch")
    # -- admin, dashboard, metrics -----------------------------------------------------------------------
    admin_token: str = _var("CROWDGATE_ADMIN_TOKEN", "", "web, scripts",
                            "token of the dashboard and the admin actions (`Authorization: Bearer`, or the "
                            "dashboard's login form); must differ from the webhook secret",
                            shown="empty (admin routes answer 403)")
    dashboard_cache_s: float = _var("CROWDGATE_DASHBOARD_CACHE_S", 5.0, "web",
                                    "how long the dashboard reuses a project's figures")
    prometheus_multiproc_dir: str = _var("PROMETHEUS_MULTIPROC_DIR", "", "web",
                                         "prometheus_client's multiprocess folder (one per deployment; crowdgate-web "
                                         "removes its `*.db` files at start): `/metrics` adds up every gunicorn "
                                         "process",
                                         shown="empty (this process only)")
    # The URL carries the receiver's token: it is never logged nor put in a message or an RQ job's arguments.
    alert_webhook_url: str = _var("CROWDGATE_ALERT_WEBHOOK_URL", "", "web, worker, cron",
                                  "Slack-compatible incoming-webhook URL crowdgate posts its own alerts to (pauses, "
                                  "SLA breaches, webhook problems, the LLM failing, agreement dropping); set it for "
                                  "all three: cron schedules the job, the worker sends, web and worker report LLM "
                                  "outages", shown="empty (off)")
    alert_interval_s: int = _var("CROWDGATE_ALERT_INTERVAL_S", 60, "cron",
                                 "seconds between runs of the alert job, which sends what the audit log recorded "
                                 "since the last run (0: none)")
    # -- ML backend --------------------------------------------------------------------------------------
    ml_basic_auth_user: str = _var("CROWDGATE_ML_BASIC_AUTH_USER", "", "web",
                                   "HTTP basic auth user for the ML backend (set the same pair in Label Studio's "
                                   "model settings)", shown="empty (no auth)")
    ml_basic_auth_password: str = _var("CROWDGATE_ML_BASIC_AUTH_PASSWORD", "", "web",
                                       "HTTP basic auth password for the ML backend", shown="empty (no auth)")
    ml_max_body_bytes: int = _var("CROWDGATE_ML_MAX_BODY_BYTES", 64 * 1024 * 1024, "web",
                                  "larger /predict bodies get 413")
    retrain_every: int = _var("CROWDGATE_RETRAIN_EVERY", 50, "web",
                              "new annotations between automatic retrainings of a project's embedded models")
    prelabel_min_tasks: int = _var("CROWDGATE_PRELABEL_MIN_TASKS", 50, "web",
                                   "an import at least this large is pre-labelled in the background (LLM only)")
    model_dir: str = _var("CROWDGATE_MODEL_DIR", ".crowdgate/models", "web, worker",
                          "versioned model artifacts (share it between web and worker)")
    # -- LLM pre-labels ----------------------------------------------------------------------------------
    openai_base_url: str = _var("OPENAI_BASE_URL", "https://api.openai.com/v1", "web, worker",
                                "any OpenAI-compatible endpoint for LLM pre-labels")
    openai_api_key: str = _var("OPENAI_API_KEY", "", "web, worker", "the endpoint's API key", shown="—")
    llm_model: str = _var("CROWDGATE_LLM_MODEL", "", "web, worker",
                          "model name at that endpoint; setting it turns LLM pre-labels on", shown="— (LLM off)")
    llm_mode: str = _var("CROWDGATE_LLM_MODE", "auto", "web",
                         "`json_schema`, `json_object`, `prompt`, or `auto` (probe and remember)")
    llm_concurrency: int = _var("CROWDGATE_LLM_CONCURRENCY", 16, "web", "parallel LLM requests")
    llm_rpm: float = _var("CROWDGATE_LLM_RPM", 0.0, "web", "LLM requests per minute", shown="off")
    llm_tpm: float = _var("CROWDGATE_LLM_TPM", 0.0, "web", "LLM tokens per minute", shown="off")
    llm_deadline_s: float = _var("CROWDGATE_LLM_DEADLINE_S", 80.0, "web",
                                 "answer Label Studio with what is ready by then")
    llm_samples: int = _var("CROWDGATE_LLM_SAMPLES", 3, "web",
                            "samples for the agreement score when the server gives no log-probabilities")
    llm_price_in: float = _var("CROWDGATE_LLM_PRICE_IN", 0.0, "web", "USD per 1M prompt tokens")
    llm_price_out: float = _var("CROWDGATE_LLM_PRICE_OUT", 0.0, "web", "USD per 1M completion tokens")
    llm_budget_usd: float = _var("CROWDGATE_LLM_BUDGET_USD", 0.0, "web", "spending cap per project (0: none)")
    llm_max_tokens: int = _var("CROWDGATE_LLM_MAX_TOKENS", 512, "web", "answer length")
    llm_max_retries: int = _var("CROWDGATE_LLM_MAX_RETRIES", 4, "web", "retries on 429/5xx, with backoff")
    llm_logprobs: bool = _var("CROWDGATE_LLM_LOGPROBS", True, "web", "ask for log-probabilities", shown="on")
    llm_vision: bool = _var("CROWDGATE_LLM_VISION", False, "web", "send images to the model", shown="off")
    llm_ner_occurrences: str = _var("CROWDGATE_LLM_NER_OCCURRENCES", "all", "web",
                                    "tag `all` occurrences of a span, or the `first`")
    llm_examples: int = _var("CROWDGATE_LLM_EXAMPLES", 3, "web", "gold items shown to the LLM as worked examples")
    redact: str = _var("CROWDGATE_REDACT", "auto", "web",
                       "mask personal data before it leaves: `auto` (non-local endpoints), `on`, `off`, "
                       "or a list of kinds")
    llm_redis_url: str = _var("CROWDGATE_REDIS_URL", "", "web",
                              "Redis of the LLM answer cache and spend counters", shown="`REDIS_URL`")
    # -- routing -----------------------------------------------------------------------------------------
    route_unbound: bool = _var("CROWDGATE_ROUTE_UNBOUND", False, "worker",
                               "act on projects without a bound policy (default: decisions audited only)",
                               shown="off")
    default_policy: str = _var("CROWDGATE_DEFAULT_POLICY", "", "worker, scripts",
                               "policy file for projects without a bound policy",
                               shown="`label_configs/default.policy.yaml`")
    active_within_s: float = _var("CROWDGATE_ACTIVE_WITHIN_S", 3600.0, "worker",
                                  "an annotator scored this recently counts as available for reassignment")
    stop_threshold_ttl_s: int = _var("CROWDGATE_STOP_THRESHOLD_TTL_S", 60, "worker",
                                     "how long a project's matched stopping threshold is cached")
    refit_every: int = _var("CROWDGATE_REFIT_EVERY", 50, "worker",
                            "new labels after which a project's Dawid–Skene refit is queued (at least; later "
                            "every `CROWDGATE_REFIT_FRACTION` of its labels)")
    refit_fraction: float = _var("CROWDGATE_REFIT_FRACTION", 0.05, "worker",
                                 "growth of a project's labels, as a share, after which it is refitted")
    # -- cron --------------------------------------------------------------------------------------------
    refit_interval_s: int = _var("CROWDGATE_REFIT_INTERVAL_S", 600, "cron",
                                 "how often every project with new labels is refitted (0: only from events)")
    reconcile_interval_s: int = _var("CROWDGATE_RECONCILE_INTERVAL_S", 300, "cron",
                                     "how often annotations are read back from Label Studio")
    public_url: str = _var("CROWDGATE_PUBLIC_URL", "", "worker",
                           "crowdgate's base URL as Label Studio reaches it; when set, reconciliation re-creates a "
                           "project's missing or inactive webhook to `<url>/hooks/labelstudio` with the secret, and "
                           "each task's Data Manager column `crowdgate_dashboard` links to `<url>/dashboard/...`",
                           shown="empty (alert only)")
    flags_interval_s: int = _var("CROWDGATE_FLAGS_INTERVAL_S", 60, "cron",
                                 "how often low-effort and fraud signals are re-evaluated")
    sla_sweep_s: int = _var("CROWDGATE_SLA_SWEEP_S", 0, "cron",
                            "seconds between backstop sweeps of escalation deadlines (each escalation also "
                            "schedules its own check)", shown="`0` (off)")
    # Trimmed results score the same and Label Studio keeps every annotation whole, so a week is safe: routing
    # reads whole results only of fresh submissions (write-backs), and reviews of a settled task go to Label Studio.
    result_retention_s: int = _var("CROWDGATE_RESULT_RETENTION_S", 7 * 24 * 3600, "cron",
                                   "a task whose newest submission is older than this keeps only what scoring reads "
                                   "of its results (the whole annotations stay in Label Studio); `0`: keep all",
                                   shown="`604800` (7 days)")
    retention_sweep_s: int = _var("CROWDGATE_RETENTION_SWEEP_S", 3600, "cron",
                                  "seconds between retention sweeps (0: none)")
    # Batched on purpose: a write per event would PATCH Label Studio inside the annotators' busiest minutes.
    data_manager_interval_s: int = _var("CROWDGATE_DATA_MANAGER_INTERVAL_S", 120, "cron",
                                        "how often tasks whose agreement or status changed get them written into "
                                        "their data as Data Manager columns (at most 500 tasks a run; 0: never)")
    # -- processes ---------------------------------------------------------------------------------------
    worker_fork: bool = _var("CROWDGATE_WORKER_FORK", False, "worker",
                             "RQ forks a process per job (isolation) instead of running jobs in-process "
                             "(about 5× faster)", shown="off")
    worker_burst: bool = _var("CROWDGATE_WORKER_BURST", False, "worker",
                              "the worker exits once the queues are empty (scripts, benchmarks)", shown="off")
    bind: str = _var("CROWDGATE_BIND", "127.0.0.1:9090", "web", "gunicorn bind address")
    web_workers: int = _var("CROWDGATE_WEB_WORKERS", 2, "web", "gunicorn processes")
    web_threads: int = _var("CROWDGATE_WEB_THREADS", 8, "web", "gunicorn threads per process")
    # -- scripts, demo, tests, benchmarks ---------------------------------------------------------------
    cache_dir: str = _var("CROWDGATE_CACHE", "~/.cache/crowdgate", "scripts",
                          "where Label Studio's venv, its database template and built wheels are kept")
    ls_venv: str = _var("CROWDGATE_LS_VENV", "", "scripts, tests", "Label Studio's own virtual environment",
                        shown="`$CROWDGATE_CACHE/label-studio-1.23.2`")
    ls_port: int = _var("CROWDGATE_LS_PORT", 0, "scripts",
                        "port for `crowdgate-labelstudio start` and the demo's Label Studio",
                        shown="`8080` (demo: free port)")
    ls_username: str = _var("CROWDGATE_LS_USERNAME", "admin@crowdgate.local", "scripts",
                            "admin login of the Label Studio the scripts start")
    ls_password: str = _var("CROWDGATE_LS_PASSWORD", "", "scripts",
                            "admin password of the Label Studio the scripts start",
                            shown="random (demo: `crowdgate-demo`)")
    ls_secret_key: str = _var("CROWDGATE_LS_SECRET_KEY", "crowdgate-local-label-studio-secret-key", "scripts",
                              "Django `SECRET_KEY` of the Label Studio the scripts start")
    ls_database: str = _var("DJANGO_DB", "", "scripts",
                            "passed to Label Studio: `DJANGO_DB=default` + `POSTGRE_NAME/USER/PASSWORD/HOST/PORT` use "
                            "PostgreSQL", shown="SQLite")
    demo_dir: str = _var("CROWDGATE_DEMO_DIR", ".crowdgate/demo", "scripts", "the demo's Label Studio data and logs")
    crowd_data: str = _var("CROWDGATE_CROWD_DATA", "", "bench", "folder of the crowd sets that are not shipped",
                           shown="`../shared/data/crowd`")

    # names of the fields the environment set (not a variable): the demo reuses a Redis only if one was named
    given: frozenset[str] = field(default=frozenset(), compare=False)

    # -- derived -----------------------------------------------------------------------------------------

    @property
    def ml_auth_required(self) -> bool:
        return bool(self.ml_basic_auth_user and self.ml_basic_auth_password)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser()

    def with_(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (field names), e.g. a test's private Redis."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every variable once; an unset or empty variable takes its default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in _variables():
            raw = env.get(f.metadata["env"])
            if not raw:  # compose files pass unset variables as empty strings
                continue
            values[f.name] = _parse(f.metadata["env"], f.type, raw)
        return cls(**values, given=frozenset(values))

    def environ(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process (only those off their default)."""
        out = {}
        for f in _variables():
            value = getattr(self, f.name)
            if value != f.default:
                out[f.metadata["env"]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out


_current: Settings | None = None


def _variables() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Settings) if "env" in f.metadata]


def use(settings: Settings) -> Settings:
    """Make ``settings`` this process's own: an entry point (web app, worker, cron) calls it once at start, and
    the RQ jobs it runs, which get only ids as arguments, read them with :func:`current`."""
    global _current
    _current = settings
    return settings


def current() -> Settings:
    """This process's settings: what its entry point gave :func:`use`, else the environment, read once."""
    return _current if _current is not None else use(Settings.from_env())


def _parse(name: str, kind: str, raw: str) -> Any:
    if kind == "str":
        return raw
    text = raw.strip().lower()
    if kind == "bool":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise SettingsError(f"{name} must be one of 1/0, true/false, on/off, yes/no, got {raw!r}")
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        raise SettingsError(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, got {raw!r}") from None


def markdown_table() -> str:
    """The README's configuration table, made from the fields above."""
    rows = ["| variable | default | used by | meaning |", "|---|---|---|---|"]
    for f in _variables():
        meta = f.metadata
        default = meta["shown"] or (f"`{f.default}`" if f.default not in ("", None) else "—")
        rows.append(f"| `{meta['env']}` | {default} | {meta['used_by']} | {meta['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
