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
