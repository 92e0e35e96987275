"""The one owner of crowdgate's Redis key layout: every key is built by a method of :class:`Keys`.

As RQ's ``Job.key_for`` owns the keys of its jobs, no other module formats a key: each store class holds a
``Keys`` built from its prefix and calls its methods. The strings below are stored data's addresses, so they
change only with a migration.

``{p}`` is the key prefix (``CROWDGATE_KEY_PREFIX``, ``cg`` by default), ``{pid}`` a Label Studio project id,
``{tid}`` a task id, ``{uid}`` an annotator (Label Studio user) id, ``{tp}`` an escalation project id.

Submissions (:class:`qa_hooks.store.SubmissionStore`)

- ``{p}:projects`` (set): project ids seen.
- ``{p}:p:{pid}:project`` (hash): label_config, control_weights (JSON), title, ...
- ``{p}:p:{pid}:sub:{unique_id}`` (hash): ``json`` (the ``Submission``), ``updated_at``, ``task``,
  ``annotator``, ``deleted``.
- ``{p}:p:{pid}:task:{tid}:subs`` (zset): the per-task index, unique ids of live submissions by time.
- ``{p}:p:{pid}:annotator:{uid}:subs`` (zset): the per-annotator submission log, by time.
- ``{p}:p:{pid}:annid:{annotation_id}`` (string): the unique id now behind a Label Studio annotation id.
- ``{p}:p:{pid}:annotators``, ``{p}:p:{pid}:tasks`` (sets): annotators and tasks seen.
- ``{p}:p:{pid}:task:{tid}`` (hash): the task's ``data`` and ``meta`` (JSON).
- ``{p}:p:{pid}:annotator:{uid}:lead_times`` / ``{p}:p:{pid}:lead_times`` (lists): the last 100 / 2,000 lead times.
- ``{p}:p:{pid}:unscored`` (zset): tasks written but not yet scored and routed, by ``{p}:p:{pid}:write_seq``
  (string), the project's write counter.
- ``{p}:p:{pid}:retain`` (zset): tasks whose submissions still hold their whole result, by their newest
  version's time; the retention sweep (``SubmissionStore.retain``) trims them once that is old enough.
- ``{p}:p:{pid}:results`` (hash): digest -> a trimmed result (the region keys scoring reads), shared by every
  retained submission that gave it.

Webhook deliveries (:class:`qa_hooks.inbox.Inbox`)

- ``{p}:seen:{pid}:{dedup_key}`` (string, ``CROWDGATE_DEDUP_TTL_S``): the job id of an annotation version (or
  event body) already delivered.
- ``{p}:inbox:{queue}`` (stream, consumer group ``crowdgate``): events waiting for the worker's batch drain
  (``CROWDGATE_INBOX=stream``); an entry is deleted once its event was scored and routed or handed to RQ.

Scores (:class:`qa_hooks.ledger.Ledger`)

- ``{p}:p:{pid}:gold:annotation`` (hash): task -> ``{"uid", "result"}`` of its ground-truth annotation.
- ``{p}:p:{pid}:gold:meta`` (hash): task -> gold answer from the task's ``meta["gold"]`` (a result list, or a
  label for single-choice configs). An annotation marked ground truth wins over ``meta``.
- ``{p}:p:{pid}:task:{tid}:score`` (hash): ``agreement``, ``consensus``, ``confidence``, ``consensus_share``,
  ``consensus_reached``, ``n``, ``posterior``, ``version`` (bumped by every rescoring).
- ``{p}:p:{pid}:task:{tid}:contrib`` (hash): annotator -> their ``Contribution`` (JSON).
- ``{p}:p:{pid}:annotator:{uid}:stats`` (hash): running sums ``gold_n``, ``gold_sum``, ``peer_n``,
  ``peer_sum``, ``pair_n``, ``pair_sum``.
- ``{p}:p:{pid}:annotator:{uid}:confusion`` (hash): ``"true\\tgiven"`` -> (soft) count.
- ``{p}:p:{pid}:flags`` (hash): annotator -> their low-effort and fraud signals (JSON), see ``qa_hooks.signals``.

Truth inference (:mod:`qa_hooks.refit`)

- ``{p}:p:{pid}:fit`` (hash): the project's last Dawid–Skene refit: ``model`` (JSON: classes, annotators, their
  confusion matrices and expected counts, the class prior), ``version``, ``seq`` (the write sequence it saw),
  ``next_seq`` (the write sequence at which the next refit is due).
- ``{p}:p:{pid}:fit:posteriors`` (hash): task -> the refit's posterior over the classes (JSON list).
- ``{p}:p:{pid}:fit:queued`` (string, expires): set while a refit job of the project is queued (one at a time).

Routing (:class:`routing.state.RoutingState`)

- ``{p}:p:{pid}:r:policy`` (hash): ``yaml`` (the policy text), ``origin``, ``set_at``. Absent: the default file.
- ``{p}:p:{pid}:r:stop_threshold:{settings}`` (string, expires): the crowd-matched stop threshold of one
  stopping rule's settings.
- ``{p}:p:{pid}:r:tiers`` (hash): annotator -> tier name. Absent: the policy's first tier.
- ``{p}:p:{pid}:r:cohorts`` (hash): annotator -> cohort, from ``crowdgate seed``'s people CSV.
- ``{p}:p:{pid}:r:seeded`` (hash): ``<project id>:<setting>`` -> JSON [digest sent, digest Label Studio kept] of a
  project setting ``crowdgate seed`` wrote (Label Studio rewrites some, e.g. it sanitises ``expert_instruction``).
- ``{p}:p:{pid}:r:ann:{uid}`` (hash): ``version`` (bumped by every tier change), ``exam_attempts`` (failed).
- ``{p}:p:{pid}:r:ann:{uid}:exam_used`` (set): gold tasks spent by failed exam attempts.
- ``{p}:p:{pid}:r:ann:{uid}:offered`` (set): gold tasks offered to the annotator in their exam view now.
- ``{p}:p:{pid}:r:examviews`` (hash): e-mail -> Data Manager view id of that annotator's exam view.
- ``{p}:p:{pid}:r:flagged`` (hash): annotator -> why (their labels never count).
- ``{p}:p:{pid}:r:fraud`` (hash): annotator -> their fraud status (JSON: ``review``, ``paused`` or ``cleared``,
  reason, evidence, who, when), see ``routing.pausing``.
- ``{p}:p:{pid}:r:task:{tid}`` (hash): the task's route, see ``routing.state.TaskRoute``.
- ``{p}:p:{pid}:r:offtier`` (hash): unique_id of a submission left out -> why (JSON).
- ``{p}:p:{pid}:r:datamanager`` (hash): task -> the Data Manager columns last written into its ``data``
  (JSON), see ``routing.data_manager``: a task is written again only when one of them changed.
- ``{p}:p:{pid}:r:subtiers`` (hash): unique_id of a submission -> its author's tier when routing first saw it.
- ``{p}:p:{pid}:r:tierprojects`` (hash): tier -> escalation project id.
- ``{p}:p:{pid}:r:prepared`` (string): set once the project is ready for escalations (``prepare_project``).
- ``{p}:r:tierproject`` (hash): escalation project id -> ``{"source": pid, "tier": name}``.
- ``{p}:p:{tp}:r:sources`` (hash): escalation task id -> source task id.
- ``{p}:p:{tp}:r:views`` (hash): e-mail -> Data Manager view id of that annotator's queue.
- ``{p}:p:{tp}:r:writeback`` (hash): unique_id in the escalation project -> annotation id written to the source.
- ``{p}:p:{pid}:r:review`` (hash): the project's review queue (:mod:`routing.review`): ``project`` (the review
  project's id), ``considered`` (finished tasks looked at), ``budget_picked`` (of them, picked by the rate).
- ``{p}:p:{pid}:r:review:considered`` (set): finished tasks already looked at for review.
- ``{p}:p:{pid}:r:review:pending`` (set): tasks decided final since the last feed (what it looks at).
- ``{p}:p:{pid}:r:review:items`` (hash): source task -> its review item (JSON: review task, rule, reason, verdict).
- ``{p}:p:{pid}:r:review:newcomers`` (hash): annotator -> finished tasks of theirs looked at since they qualified.
- ``{p}:p:{pid}:r:review:acceptance`` (hash): ``"{uid}:reviewed"`` / ``"{uid}:accepted"`` -> counts.
- ``{p}:p:{rp}:r:review:verdicts`` (hash): unique_id of a review answer -> the verdict applied (JSON), once.
- ``{p}:r:reviewprojects`` (hash): review project id -> source project id; ``{p}:r:lock:review:{pid}``
  (redis-py lock): one creator of a project's review project.
- ``{p}:p:{pid}:llm:audit`` (hash): unique_id of a human submission -> the LLM audit's verdict (JSON), see
  ``ml_backend.audit``; ``{p}:p:{pid}:llm:audit:considered`` (set): submissions already sampled or passed over.
- ``{p}:r:open:{uid}`` (set): ``"pid:tid"`` tasks assigned to the annotator and not answered yet (its load).
- ``{p}:r:seen`` (zset): annotator -> last time a submission of theirs was scored (availability).
- ``{p}:r:deadlines`` (zset): ``"pid:tid"`` of escalated tasks -> their deadline.
- ``{p}:r:users`` (hash): Label Studio user id -> e-mail (cache of ``/api/users/``).
- ``{p}:r:edition:{pid}`` (string, 1 h): ``community`` or ``enterprise``, as probed.
- ``{p}:r:lock:tierproject:{pid}:{tier}``, ``{p}:r:lock:gold:{pid}:{uid}``, ``{p}:r:lock:taskdata:{tid}``
  (redis-py locks): one creator of an escalation project, one gold-offer sync per annotator, one writer of a
  task's ``data`` (routing's exam offers and training's difficulty).

Audit log (:class:`routing.audit.AuditLog`)

- ``{p}:audit`` (stream): the entries.
- ``{p}:audit:p:{pid}``, ``{p}:audit:p:{pid}:t:{tid}``, ``{p}:audit:u:{uid}`` (lists): stream ids.

ML backend (``ml_backend``)

- ``{p}:p:{pid}:difficulty`` (hash): task -> difficulty predicted by the project's difficulty model (JSON
  number), written by training and for new tasks, read by routing.
- ``{p}:ml:p:{pid}:since_training`` (string): annotations since the last training was queued.
- ``{p}:llm:answer:{cache_key}`` (string, expires): a cached LLM answer (JSON), keyed by model, prompt version,
  config and task data.
- ``{p}:llm:spend:{pid}`` (string): the project's LLM spending in USD.

Metrics (:mod:`crowdgate.metrics`)

- ``{p}:metrics:audit_cursor`` (string): the id of the last audit entry counted into the counters below.
- ``{p}:metrics:audit_counts`` (hash): ``"kind\\taction"`` -> how many audit entries of that kind and action
  were written (what ``/metrics`` serves as ``crowdgate_*_total`` counters, the same from every process).

Alerts (:mod:`crowdgate.alerts`)

- ``{p}:alerts:cursor`` (string): the id of the last audit entry the alert job has dealt with (sent, or passed
  over as not worth an alert); it moves only after the receiver accepted the message.
- ``{p}:alerts:lock`` (string, expires): the token of the alert run holding it (one run at a time).
- ``{p}:alerts:sent`` (hash): digest of an alert line -> when it was last sent (repeats within the hour are
  left out; older fields are dropped).
- ``{p}:alerts:agreement`` (hash): project -> JSON ``[pair_n, pair_sum]``, the sums of its annotators' pairwise
  agreement when its last window was judged (the agreement-drop check).

All keys of a deployment share the prefix, so one prefix is one crowdgate's whole state.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]

Id = int | str  # ids come as ints from events and as strings from Redis replies; both format alike

# Stands in for the element id when a key is cut around it (Lua scripts build per-element keys from the parts).
_HOLE = "\x00"


def _around(key: str) -> tuple[str, str]:
    head, _, tail = key.partition(_HOLE)
    return head, tail


def _glob_escape(text: str) -> str:
    """``text`` matched literally by Redis' glob patterns (a prefix may hold ``*``, ``?``, ``[`` or ``\\``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True)
class Keys:
    """crowdgate's Redis keys under one ``prefix``; see the module docstring for what each holds."""

    prefix: str = "cg"

    def _p(self, project: Id) -> str:
        return f"{self.prefix}:p:{project}"

    # -- submissions (qa_hooks.store) ---------------------------------------------------------------------

    def projects(self) -> str:
        return f"{self.prefix}:projects"

    def project_info(self, project: Id) -> str:
        return f"{self._p(project)}:project"

    def submission(self, project: Id, unique_id: Id) -> str:
        return f"{self._p(project)}:sub:{unique_id}"

    def submission_parts(self, project: Id) -> tuple[str, str]:
        """(head, tail) around the unique id of :meth:`submission`, for Lua scripts."""
        return _around(self.submission(project, _HOLE))

    def task_submissions(self, project: Id, task: Id) -> str:
        return f"{self._p(project)}:task:{task}:subs"

    def task_submissions_parts(self, project: Id) -> tuple[str, str]:
        """(head, tail) around the task id of :meth:`task_submissions`, for Lua scripts."""
        return _around(self.task_submissions(project, _HOLE))

    def annotator_submissions(self, project: Id, annotator: Id) -> str:
        return f"{self._p(project)}:annotator:{annotator}:subs"

    def annotator_submissions_parts(self, project: Id) -> tuple[str, str]:
        """(head, tail) around the annotator id of :meth:`annotator_submissions`, for Lua scripts."""
        return _around(self.annotator_submissions(project, _HOLE))

    def annotation_submission(self, project: Id, annotation: Id) -> str:
        """The unique id now behind Label Studio annotation id ``annotation``."""
        return f"{self._p(project)}:annid:{annotation}"

    def annotation_submission_parts(self, project: Id) -> tuple[str, str]:
        """(head, tail) around the annotation id of :meth:`annotation_submission`, for Lua scripts."""
        return _around(self.annotation_submission(project, _HOLE))

    def annotators(self, project: Id) -> str:
        return f"{self._p(project)}:annotators"

    def tasks(self, project: Id) -> str:
        return f"{self._p(project)}:tasks"

    def task_info(self, project: Id, task: Id) -> str:
        return f"{self._p(project)}:task:{task}"

    def annotator_lead_times(self, project: Id, annotator: Id) -> str:
        return f"{self._p(project)}:annotator:{annotator}:lead_times"

    def lead_times(self, project: Id) -> str:
        return f"{self._p(project)}:lead_times"

    def write_seq(self, project: Id) -> str:
        return f"{self._p(project)}:write_seq"

    def unscored(self, project: Id) -> str:
        return f"{self._p(project)}:unscored"

    def retention_queue(self, project: Id) -> str:
        return f"{self._p(project)}:retain"

    def results(self, project: Id) -> str:
        return f"{self._p(project)}:results"

    def scoring_patterns(self, project: Id) -> tuple[str, ...]:
        """``SCAN MATCH`` patterns of every key of the project's scoring state (submissions, their indexes,
        task info, gold, scores, annotator records, flags): what ``crowdgate rebuild-state`` wipes and rebuilds
        from Label Studio. Routing's (``{p}:p:{pid}:r:...``), the ML backend's and the dedup marks stay."""
        singles = (self.project_info, self.annotators, self.tasks, self.lead_times, self.write_seq, self.unscored,
                   self.retention_queue, self.results, self.annotation_gold, self.meta_gold, self.annotator_flags)
        # task_info's pattern also covers the task's subs, score and contrib keys
        per_id = (self.submission, self.annotation_submission, self.task_info, self.annotator_submissions,
                  self.annotator_lead_times, self.annotator_stats, self.annotator_confusion)
        exact = tuple(_glob_escape(key(project)) for key in singles)
        return exact + tuple(_glob_escape(head) + "*" + _glob_escape(tail)
                             for head, tail in (_around(key(project, _HOLE)) for key in per_id))

    # -- webhook deliveries (qa_hooks.inbox) -----------------------------------------------------------------

    def dedup(self, project: Id | None, dedup_key: str) -> str:
        return f"{self.prefix}:seen:{project}:{dedup_key}"

    def inbox(self, queue: str) -> str:
        return f"{self.prefix}:inbox:{queue}"

    # -- scores (qa_hooks.ledger) ----------------------------------------------------------------------------

    def annotation_gold(self, project: Id) -> str:
        return f"{self._p(project)}:gold:annotation"

    def meta_gold(self, project: Id) -> str:
        return f"{self._p(project)}:gold:meta"

    def task_score(self, project: Id, task: Id) -> str:
        return f"{self._p(project)}:task:{task}:score"

    def task_contributions(self, project: Id, task: Id) -> str:
        return f"{self._p(project)}:task:{task}:contrib"

    def annotator_stats(self, project: Id, annotator: Id) -> str:
        return f"{self._p(project)}:annotator:{annotator}:stats"

    def annotator_stats_parts(self, project: Id) -> tuple[str, str]:
        """(head, tail) around the annotator id of :meth:`annotator_stats`, for Lua scripts."""
        return _around(self.annotator_stats(project, _HOLE))

    def annotator_confusion(self, project: Id, annotator: Id) -> str:
        return f"{self._p(project)}:annotator:{annotator}:confusion"

    def annotator_flags(self, project: Id) -> str:
        return f"{self._p(project)}:flags"

    # -- routing (routing.state) -----------------------------------------------------------------------------

    def _r(self, project: Id) -> str:
        return f"{self._p(project)}:r"

    def policy(self, project: Id) -> str:
        return f"{self._r(project)}:policy"

    def stop_threshold(self, project: Id, settings: str) -> str:
        return f"{self._r(project)}:stop_threshold:{settings}"

    def tiers(self, project: Id) -> str:
        return f"{self._r(project)}:tiers"

    def cohorts(self, project: Id) -> str:
        """Hash annotator -> cohort (``crowdgate seed``'s people CSV), for reports that compare groups."""
        return f"{self._r(project)}:cohorts"

    def seeded(self, project: Id) -> str:
        """Hash of the settings ``crowdgate seed`` wrote to ``project`` and its escalation projects."""
        return f"{self._r(project)}:seeded"

    def annotator_record(self, project: Id, annotator: Id) -> str:
        return f"{self._r(project)}:ann:{annotator}"

    def exam_used(self, project: Id, annotator: Id) -> str:
        return f"{self.annotator_record(project, annotator)}:exam_used"

    def exam_offered(self, project: Id, annotator: Id) -> str:
        return f"{self.annotator_record(project, annotator)}:offered"

    def exam_views(self, project: Id) -> str:
        return f"{self._r(project)}:examviews"

    def flagged(self, project: Id) -> str:
        return f"{self._r(project)}:flagged"

    def fraud_status(self, project: Id) -> str:
        return f"{self._r(project)}:fraud"

    def task_route(self, project: Id, task: Id) -> str:
        return f"{self._r(project)}:task:{task}"

    def off_tier(self, project: Id) -> str:
        return f"{self._r(project)}:offtier"

    def data_manager_written(self, project: Id) -> str:
        """Hash task -> the Data Manager columns (JSON) :mod:`routing.data_manager` last wrote into its data."""
        return f"{self._r(project)}:datamanager"

    def submission_tiers(self, project: Id) -> str:
        return f"{self._r(project)}:subtiers"

    def tier_projects(self, project: Id) -> str:
        return f"{self._r(project)}:tierprojects"

    def prepared(self, project: Id) -> str:
        return f"{self._r(project)}:prepared"

    def tier_project_links(self) -> str:
        return f"{self.prefix}:r:tierproject"

    def tier_sources(self, tier_project: Id) -> str:
        return f"{self._r(tier_project)}:sources"

    def queue_views(self, tier_project: Id) -> str:
        return f"{self._r(tier_project)}:views"

    def written_back(self, tier_project: Id) -> str:
        return f"{self._r(tier_project)}:writeback"

    # -- review (routing.review) and the LLM audit (ml_backend.audit) ------------------------------------

    def review(self, project: Id) -> str:
        return f"{self._r(project)}:review"

    def review_considered(self, project: Id) -> str:
        return f"{self._r(project)}:review:considered"

    def review_pending(self, project: Id) -> str:
        return f"{self._r(project)}:review:pending"

    def review_items(self, project: Id) -> str:
        return f"{self._r(project)}:review:items"

    def review_newcomers(self, project: Id) -> str:
        return f"{self._r(project)}:review:newcomers"

    def review_acceptance(self, project: Id) -> str:
        return f"{self._r(project)}:review:acceptance"

    def review_verdicts(self, review_project: Id) -> str:
        return f"{self._r(review_project)}:review:verdicts"

    def review_projects(self) -> str:
        return f"{self.prefix}:r:reviewprojects"

    def review_lock(self, project: Id) -> str:
        return f"{self.prefix}:r:lock:review:{project}"

    def llm_audit(self, project: Id) -> str:
        return f"{self._p(project)}:llm:audit"

    def llm_audit_considered(self, project: Id) -> str:
        return f"{self._p(project)}:llm:audit:considered"

    def open_tasks(self, annotator: Id) -> str:
        return f"{self.prefix}:r:open:{annotator}"

    def last_seen(self) -> str:
        return f"{self.prefix}:r:seen"

    def deadlines(self) -> str:
        return f"{self.prefix}:r:deadlines"

    def user_emails(self) -> str:
        return f"{self.prefix}:r:users"

    def edition(self, project: Id) -> str:
        return f"{self.prefix}:r:edition:{project}"

    def tier_project_lock(self, project: Id, tier: str) -> str:
        return f"{self.prefix}:r:lock:tierproject:{project}:{tier}"

    def gold_offer_lock(self, project: Id, annotator: Id) -> str:
        return f"{self.prefix}:r:lock:gold:{project}:{annotator}"

    def task_data_lock(self, task: Id) -> str:
        return f"{self.prefix}:r:lock:taskdata:{task}"

    # -- audit log (routing.audit) ---------------------------------------------------------------------------

    def audit_stream(self) -> str:
        return f"{self.prefix}:audit"

    def audit_project(self, project: Id) -> str:
        return f"{self.prefix}:audit:p:{project}"

    def audit_task(self, project: Id, task: Id) -> str:
        return f"{self.prefix}:audit:p:{project}:t:{task}"

    def audit_annotator(self, annotator: Id) -> str:
        return f"{self.prefix}:audit:u:{annotator}"

    # -- truth inference (qa_hooks.refit) -------------------------------------------------------------------

    def truth_fit(self, project: Id) -> str:
        return f"{self._p(project)}:fit"

    def truth_posteriors(self, project: Id) -> str:
        return f"{self._p(project)}:fit:posteriors"

    def refit_queued(self, project: Id) -> str:
        return f"{self._p(project)}:fit:queued"

    def llm_labels(self, project: Id) -> str:
        """LLM pre-labels' answers per task (qa_hooks.llm_annotator): ``task|llm:<model>:<prompt>`` -> json."""
        return f"{self._p(project)}:fit:llm"

    # -- ML backend -----------------------------------------------------------------------------------------

    def difficulty(self, project: Id) -> str:
        return f"{self._p(project)}:difficulty"

    def since_training(self, project: Id) -> str:
        return f"{self.prefix}:ml:p:{project}:since_training"

    def llm_answer(self, cache_key: str) -> str:
        return f"{self.prefix}:llm:answer:{cache_key}"

    def llm_spend(self, project: Id) -> str:
        return f"{self.prefix}:llm:spend:{project}"

    # -- metrics (crowdgate.metrics) -----------------------------------------------------------------------

    def metrics_audit_cursor(self) -> str:
        return f"{self.prefix}:metrics:audit_cursor"

    def metrics_audit_counts(self) -> str:
        return f"{self.prefix}:metrics:audit_counts"

    # -- alerts (crowdgate.alerts) -------------------------------------------------------------------------

    def alerts_cursor(self) -> str:
        return f"{self.prefix}:alerts:cursor"

    def alerts_lock(self) -> str:
        return f"{self.prefix}:alerts:lock"

    def alerts_sent(self) -> str:
        return f"{self.prefix}:alerts:sent"

    def alerts_agreement(self) -> str:
        return f"{self.prefix}:alerts:agreement"
