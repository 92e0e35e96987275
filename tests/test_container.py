import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_copies_every_package_and_starts_the_web_app():
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, flags=re.M))
    assert set(packages) <= copied
    assert "torch==2.13.0" in dockerfile and 'CMD ["crowdgate-web"]' in dockerfile


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_compose_file_is_valid():
    env = {"PATH": "/usr/bin:/bin", "CROWDGATE_WEBHOOK_SECRET": "s", "LABEL_STUDIO_API_KEY": "k"}
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


DEV_ONLY = {"krippendorff", "statsmodels", "pytest", "ruff", "hypothesis", "crowd-kit", "llama-cpp-python"}
RUNTIME_PACKAGES = ("core", "crowdgate", "ml_backend", "qa_hooks", "routing", "scripts")


def requirement_names(path: Path) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower() for line in lines if line and line[0] != "-"}


def test_runtime_requirements_hold_no_test_or_benchmark_tools():
    runtime = requirement_names(ROOT / "requirements.txt")
    declared = {re.split(r"[=<>!~\[; ]", d, maxsplit=1)[0].lower()
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert not (runtime | declared) & DEV_ONLY
    assert {"krippendorff", "statsmodels", "pytest", "ruff"} <= requirement_names(ROOT / "requirements-dev.txt")
    # ... and no module of the services imports one of them.
    pattern = re.compile(r"^\s*(?:import|from)\s+(krippendorff|statsmodels|pytest|hypothesis|crowdkit)\b", re.M)
    importing = [str(path.relative_to(ROOT)) for package in RUNTIME_PACKAGES
                 for path in (ROOT / package).rglob("*.py") if pattern.search(path.read_text())]
    assert importing == []


def test_the_demo_installs_no_test_dependencies_and_a_second_test_run_installs_nothing(tmp_path):
    # `make -n` with a fake, fully installed venv: the demo builds no llama.cpp; tests and benches do, once.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)

    def plan(target: str) -> str:
        return subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={venv}", target], capture_output=True,
                              text=True, check=True).stdout

    fresh_demo = plan("demo")
    assert "requirements.txt" in fresh_demo
    assert "llama" not in fresh_demo and "requirements-dev" not in fresh_demo
    fresh_test = plan("test")
    assert "llama-cpp-python" in fresh_test and "requirements-dev.txt" in fresh_test
    for stamp in (".crowdgate-installed", ".crowdgate-dev-installed"):
        (venv / stamp).touch()  # what a first `make test` leaves
    again = plan("test")
    assert "pip" not in again and "pytest" in again
