"""Start, stop and kill child processes (Faust workers, CLIs) for integration tests.

Each child runs in its own process group with its stdout and stderr in a log file, dies
with the test process (PR_SET_PDEATHSIG) and is stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from idstream.devbroker import die_with_parent

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ManagedProcess:
    """A child process and its log file."""

    name: str
    args: tuple[str, ...]
    log_path: Path
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the process group, SIGKILL it after `timeout` seconds; return the exit code."""
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s (pid %s) ignored SIGTERM for %ss; killing", self.name, self.pid, timeout
                )
        return self.kill()

    def kill(self) -> int:
        """SIGKILL the process group at once (a crash, as with kill -9); return the exit code."""
        if self.popen.poll() is None:
            self._signal(signal.SIGKILL)
        return self.popen.wait()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


def start_process(
    args: Sequence[str],
    *,
    name: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
) -> ManagedProcess:
    """Start `args` with os.environ updated by `env`; output goes to `log_path`."""
    full_env = {**os.environ, **(env or {})}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
    logger.info("started %s (pid %s): %s", name, popen.pid, " ".join(args))
    return ManagedProcess(name=name, args=tuple(args), log_path=log_path, popen=popen)


def start_python_module(
    module: str,
    *module_args: str,
    name: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """Run `python -m module args` with this interpreter, the repo root importable."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    # Unbuffered, so the log is complete even when the child is killed.
    child_env = {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(env or {})}
    args = (sys.executable, "-m", module, *module_args)
    return start_process(args, name=name, log_path=log_path, env=child_env)


@dataclass
class ProcessPool:
    """Tracks the processes a test starts so the fixture can stop all of them."""

    log_dir: Path
    started: list[ManagedProcess] = field(default_factory=list)

    def start_python_module(
        self,
        module: str,
        *module_args: str,
        name: str,
        env: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        """Start `python -m module`; its log is `<log_dir>/<name>-<n>.log`."""
        log_path = self.log_dir / f"{name}-{len(self.started)}.log"
        proc = start_python_module(module, *module_args, name=name, log_path=log_path, env=env)
        self.started.append(proc)
        return proc

    def stop_all(self, timeout: float = 30.0) -> None:
        for proc in reversed(self.started):
            proc.stop(timeout)

    def report(self, lines: int = 80) -> str:
        """The tail of every log, for a failing test's output."""
        parts = []
        for proc in self.started:
            parts.append(f"----- {proc.name} pid {proc.pid} rc {proc.returncode} {proc.log_path}")
            parts.append(proc.log_tail(lines))
        return "\n".join(parts)
