"""core.keys owns the Redis key layout: nothing else formats a key, every key is under the prefix, and the
strings are those stored data already lives at."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from core.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "qa_hooks", "routing", "ml_backend", "crowdgate", "scripts")
OWNER = ROOT / "core" / "keys.py"

# What key text looks like in Python (f-strings and literals) and in Lua (a literal concatenated with ..).
_SEGMENTS = ("audit", "seen", "ml", "llm", "sub", "subs", "task", "annotator", "annid", "gold", "flags",
             "difficulty", "unscored", "write_seq", "projects", "lead_times", "since_training", "lock", "contrib",
             "score", "stats", "confusion", "pred", "spend", "policy", "tiers", "ann", "exam_used", "offered",
             "examviews", "flagged", "offtier", "subtiers", "tierprojects", "tierproject", "sources", "views",
             "writeback", "open", "deadlines", "users", "edition", "prepared", "stop_threshold", "project",
             "annotators", "tasks")
KEY_TEXT = [
    re.compile(r"prefix\}:"),
    re.compile(r":p:\{"),
    re.compile(r"\{p\}:"),
    re.compile(r":r:"),
    re.compile(r":audit"),
    re.compile(r"crowdgate:llm"),
    re.compile(r"_p\([^)]*\)\}:"),  # f"{self._p(project)}:policy"
    re.compile(r"(?:^|[}'\"]):(?:" + "|".join(_SEGMENTS) + r")(?=[:{'\"]|$)"),  # ":task:", f"{key}:exam_used"
    re.compile(r"\.\.\s*'[^'\n]*:[^'\n]*'|'[^'\n]*:[^'\n]*'\s*\.\."),  # Lua: p .. ':task:' .. task
]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (documentation of the layout may quote keys)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def key_formatting(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: text`` of each string in ``path`` (docstrings aside) that builds a Redis key."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # judged whole, not by its pieces
            skip.update(id(v) for v in ast.walk(node) if v is not node)
    hits = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.JoinedStr):
            text = ast.get_source_segment(source, node) or ""
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        for offset, line in enumerate(text.splitlines()):
            if any(p.search(line) for p in KEY_TEXT):
                hits.append(f"{path.relative_to(root)}:{node.lineno + offset}: {line.strip()[:100]}")
    return hits


def project_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if p != OWNER)


def test_no_module_but_core_keys_formats_a_redis_key() -> None:
    hits = [hit for path in project_files() for hit in key_formatting(path)]
    assert not hits, "Redis keys formatted outside core/keys.py (use a Keys method):\n" + "\n".join(hits)


def test_the_scan_finds_key_formatting(tmp_path: Path) -> None:
    # The scan must catch each way keys used to be written, or the test above could not fail.
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Keys: ``{p}:p:{pid}:task:{tid}`` is documentation, not formatting."""\n'
        'a = f"{self.prefix}:p:{project}"\n'
        'b = f"{p}:task:{task}:subs"\n'
        'c = f"{ctx.prefix}:r:lock:gold:{project}"\n'
        'd = "crowdgate:llm:"\n'
        "LUA = \"\"\"\nlocal x = 1\nredis.call('HGET', p .. ':task:' .. task .. ':score', 'version')\n\"\"\"\n"
        'e = ":seen:"\n'
        'ok = f"{project}:{task}"\n'
        'ok2 = f"task:{action}"\n'
        'ok3 = "redis.call(\'HGET\', KEYS[1], ARGV[1] .. uid .. ARGV[2])"\n'
    )
    hits = key_formatting(sample, tmp_path)
    assert sorted(int(h.split(":")[1]) for h in hits) == [2, 3, 4, 5, 8, 10], hits


def _methods() -> list[str]:
    return [name for name, _ in inspect.getmembers(Keys, inspect.isfunction) if not name.startswith("_")]


@pytest.mark.parametrize("name", _methods())
def test_every_key_starts_with_the_prefix(name: str) -> None:
    keys = Keys("some-prefix")
    method = getattr(keys, name)
    args = [7, "x"][: len(inspect.signature(method).parameters)]
    out = method(*args)
    for key in out if isinstance(out, tuple) else (out,):
        if key:  # a tail may be empty
            assert isinstance(key, str)
    first = out[0] if isinstance(out, tuple) else out
    assert first.startswith("some-prefix:"), (name, out)


def test_default_prefix_is_cg() -> None:
    assert Keys().prefix == "cg"
    assert Keys().projects() == "cg:projects"


def test_keys_are_the_strings_stored_data_lives_at() -> None:
    k = Keys("cg")
    assert k.submission(3, "ab-1") == "cg:p:3:sub:ab-1"
    assert k.task_submissions(3, 12) == "cg:p:3:task:12:subs"
    assert k.annotator_submissions(3, 9) == "cg:p:3:annotator:9:subs"
    assert k.annotator_stats(3, 9) == "cg:p:3:annotator:9:stats"
    assert k.annotator_confusion(3, 9) == "cg:p:3:annotator:9:confusion"
    assert k.task_contributions(3, 12) == "cg:p:3:task:12:contrib"
    assert k.task_score(3, 12) == "cg:p:3:task:12:score"
    assert k.task_info(3, 12) == "cg:p:3:task:12"
    assert k.unscored(3) == "cg:p:3:unscored"
    assert k.dedup(3, "uid:2024") == "cg:seen:3:uid:2024"
    assert k.task_route(3, 12) == "cg:p:3:r:task:12"
    assert k.annotator_record(3, 9) == "cg:p:3:r:ann:9"
    assert k.exam_used(3, 9) == "cg:p:3:r:ann:9:exam_used"
    assert k.tier_project_links() == "cg:r:tierproject"
    assert k.open_tasks(9) == "cg:r:open:9"
    assert k.audit_stream() == "cg:audit"
    assert k.audit_task(3, 12) == "cg:audit:p:3:t:12"
    assert k.audit_annotator(9) == "cg:audit:u:9"
    assert k.difficulty(3) == "cg:p:3:difficulty"
    assert k.since_training(3) == "cg:ml:p:3:since_training"
    assert k.task_data_lock(12) == "cg:r:lock:taskdata:12"
    assert k.gold_offer_lock(3, 9) == "cg:r:lock:gold:3:9"
    assert k.tier_project_lock(3, "expert") == "cg:r:lock:tierproject:3:expert"
    # the LLM cache moved under the common prefix
    assert k.llm_answer("abc") == "cg:llm:answer:abc"
    assert k.llm_spend(3) == "cg:llm:spend:3"


@pytest.mark.parametrize("parts, whole", [
    ("submission_parts", "submission"),
    ("task_submissions_parts", "task_submissions"),
    ("annotator_submissions_parts", "annotator_submissions"),
    ("annotator_stats_parts", "annotator_stats"),
])
def test_parts_rebuild_the_key_lua_makes(parts: str, whole: str) -> None:
    k = Keys("t")
    head, tail = getattr(k, parts)(5)
    assert head + "42" + tail == getattr(k, whole)(5, 42)


def test_the_owner_itself_is_seen_by_the_scan() -> None:
    # core/keys.py formats every key, so the scan run on it finds one per key method: the patterns are live.
    assert len(key_formatting(OWNER)) >= 50
