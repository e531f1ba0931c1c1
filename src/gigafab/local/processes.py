"""Processes of the local control plane: started detached, tracked by pid files.

Each component runs in its own session (so ``gigafab local up`` can exit while the
plane keeps running) and writes its output to ``logs/<name>.log``. ``stop`` ends the
whole process group and confirms that the pid still belongs to the program it
started before signalling it, so a recycled pid is never killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class PlaneError(RuntimeError):
    """A failure the user can act on; the message says what to do."""


@dataclass(frozen=True)
class Component:
    """One long-running program of the plane."""

    name: str
    argv: Sequence[str]
    ready: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 60.0
    netns: str | None = None
    """Network namespace (under /run/netns) to run in."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class Supervisor:
    """Starts, finds and stops the components whose pid files live in ``pids``."""

    def __init__(self, pids: Path, logs: Path) -> None:
        self.pids = pids
        self.logs = logs

    def _pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def pid_of(self, name: str) -> int | None:
        """The pid of a running component, or None (stale pid files are ignored)."""
        pidfile = self._pidfile(name)
        try:
            pid_text, program = pidfile.read_text().split("\n", 1)
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        cmdline = _cmdline(pid)
        if not cmdline or program.strip() not in cmdline[:3]:
            return None
        return pid

    def running(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for pidfile in sorted(self.pids.glob("*.pid")):
            pid = self.pid_of(pidfile.stem)
            if pid is not None:
                found[pidfile.stem] = pid
        return found

    def start(self, component: Component) -> int:
        """Start ``component`` unless it runs; wait until it is ready."""
        existing = self.pid_of(component.name)
        if existing is not None:
            return existing
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{component.name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(component.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **component.env},
                preexec_fn=_enter(component.netns) if component.netns else None,  # noqa: PLW1509 - setns only
            )
        self._pidfile(component.name).write_text(f"{process.pid}\n{component.argv[0]}")
        deadline = time.monotonic() + component.ready_timeout
        # until the child has exec'd, /proc shows our own command line: wait for its own
        while component.argv[0] not in _cmdline(process.pid)[:3] and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PlaneError(
                    f"{component.name} exited with code {process.returncode} while starting; "
                    f"its log is {log_path}:\n{_tail(log_path)}"
                )
            if component.ready():
                return process.pid
            time.sleep(0.25)
        raise PlaneError(f"{component.name} did not become ready in {component.ready_timeout:.0f}s; see {log_path}")

    def stop(self, name: str, grace: float = 10.0) -> bool:
        """Stop a component and its process group; True if something was stopped."""
        pid = self.pid_of(name)
        self._pidfile(name).unlink(missing_ok=True)
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        return True


def _enter(namespace: str) -> Callable[[], None]:
    from gigafab.local.sitenet import enter

    return enter(namespace)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    try:
        return state.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
