"""The one settings object: parsing, its README table, and nobody else reading the environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.settings import Settings, SettingsError, markdown_table

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "qa_hooks", "routing", "ml_backend", "crowdgate", "scripts")
# Reading a variable: os.environ.get / [...] / getenv. Copying the whole environment into a child process's
# (``{**os.environ, ...}``) or setting a library's own variable is not reading crowdgate's settings.
READ = re.compile(r"os\.environ\.get\(|os\.environ\[|os\.getenv\(|environ\.get\(\"(?:CROWDGATE|REDIS|LABEL|OPENAI)")


def test_defaults_and_parsing():
    s = Settings.from_env({})
    assert s == Settings() and s.given == frozenset()
    s = Settings.from_env({"CROWDGATE_WEB_WORKERS": "3", "CROWDGATE_LLM_LOGPROBS": "off", "CROWDGATE_LLM_RPM": "60",
                           "CROWDGATE_ROUTE_UNBOUND": "1", "OPENAI_BASE_URL": ""})
    assert (s.web_workers, s.llm_logprobs, s.llm_rpm, s.route_unbound) == (3, False, 60.0, True)
    assert s.openai_base_url == Settings().openai_base_url  # empty (as compose passes unset ones) = default
    assert s.given == {"web_workers", "llm_logprobs", "llm_rpm", "route_unbound"}
    assert Settings.from_env(s.environ()) == s  # what a child process needs to get the same settings


@pytest.mark.parametrize(("name", "value", "words"), [
    ("CROWDGATE_WEB_WORKERS", "two", "an integer"),
    ("CROWDGATE_REDIS_TIMEOUT_S", "fast", "a number"),
    ("CROWDGATE_ROUTE_UNBOUND", "maybe", "1/0"),
])
def test_a_bad_value_names_its_variable(name, value, words):
    with pytest.raises(SettingsError, match=f"{name} must be.*{words}.*{value!r}"):
        Settings.from_env({name: value})


def test_readme_table_is_the_settings():
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's configuration table differs: paste `python -m core.settings`"


def test_no_module_reads_the_environment_but_settings():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "core" / "settings.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if READ.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
