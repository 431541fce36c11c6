"""Run a command to its end under a meter (`infergy meter`): its exit status as a shell
reports it, Ctrl-C, SIGTERM and SIGHUP passed on to the command and every process it
started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time

# Exit codes of a command that never ran, as a shell would give them.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
# Seconds a signalled command gets to end, before it is sent SIGTERM, then SIGKILL (as
# `docker stop` gives).
INTERRUPT_GRACE_S = 10.0
# The signals passed on to the command (as a terminal or a scheduler sends them).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Seconds between two looks at whether the command has ended (see run_command).
WAIT_POLL_S = 0.05


def run_command(command: list[str], *, grace_s: float = INTERRUPT_GRACE_S) -> tuple[int, bool]:
    """Run the command (no shell) to its end: (exit status as a shell reports it, 128 + N
    where signal N ended it; whether a signal interrupted it).

    The command leads a session of its own, so that a signal reaches every process it
    started (`sh -c "a & b"`), and Ctrl-C at the terminal reaches infergy alone: infergy
    passes SIGINT, SIGTERM and SIGHUP on to the command's whole process group. A command
    still running `grace_s` after that is sent SIGTERM, then SIGKILL after as long again;
    another signal moves on to the next step at once. What is left of the group once the
    command has ended after a signal is stopped too. FileNotFoundError or PermissionError
    where the command cannot be started."""
    forward = _Forwarder(grace_s)
    previous = {s: signal.signal(s, forward.received) for s in FORWARDED}
    try:
        # The handlers only note the signal and pass it on: waiting is never interrupted,
        # so the command's status is never lost (an exception raised inside Popen.wait once
        # the command was reaped lost it: `meter` exited 0 after Ctrl-C).
        proc = subprocess.Popen(command, start_new_session=True)
        forward.attach(proc.pid)
        code = _wait(proc)
        forward.done()
        if forward.signals:
            _stop_group(proc.pid, grace_s)
    finally:
        forward.done()
        for s, handler in previous.items():
            if handler is not None:  # None: not set from Python, cannot be set back
                signal.signal(s, handler)
    return (128 - code if code < 0 else code), bool(forward.signals)


def _wait(proc: subprocess.Popen) -> int:
    """The command's status, waited for in short steps. The kernel may hand a signal to any
    thread of infergy (the meter's sampler, say); Python then runs its handler on the main
    thread only once that thread runs Python again, and a main thread blocked in one
    waitpid never does until the command ends: Ctrl-C was lost (seen in CI)."""
    while True:
        try:
            return proc.wait(timeout=WAIT_POLL_S)
        except subprocess.TimeoutExpired:
            continue


class _Forwarder:
    """Passes the signals infergy gets on to the command's process group, and escalates
    (SIGTERM, then SIGKILL) where the command does not end within the grace time."""

    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.signals: list[int] = []
        self._steps: list[int] = []  # signals to send, in order
        self._sent = 0
        self._pgid: int | None = None
        self._timer: threading.Timer | None = None
        self._finished = False
        # Reentrant: the handler runs on the main thread, maybe while it holds the lock.
        self._lock = threading.RLock()

    def received(self, signum, frame) -> None:
        """The signal handler: note the signal, and send the command the next step."""
        with self._lock:
            self.signals.append(signum)
            if not self._steps:
                self._steps = list(dict.fromkeys((signum, signal.SIGTERM, signal.SIGKILL)))
            if self._pgid is not None:
                self._next()

    def attach(self, pgid: int) -> None:
        """The command has started: signals received before now reach it now."""
        with self._lock:
            self._pgid = pgid
            if self.signals and not self._sent:  # the handler may have sent it already
                self._next()

    def done(self) -> None:
        with self._lock:
            self._finished = True
            if self._timer is not None:
                self._timer.cancel()

    def _next(self) -> None:
        with self._lock:
            if self._finished or self._sent >= len(self._steps):
                return
            step = self._steps[self._sent]
            self._sent += 1
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, step)
            if self._timer is not None:
                self._timer.cancel()
            if self._sent < len(self._steps):
                self._timer = threading.Timer(self.grace_s, self._next)
                self._timer.daemon = True
                self._timer.start()


def _stop_group(pgid: int, grace_s: float) -> None:
    """After the command ended on a signal: stop what is left of its process group
    (a background job of a shell ignores SIGINT), SIGTERM then SIGKILL after `grace_s`."""
    if not _alive(pgid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while _alive(pgid) and time.monotonic() < end:
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _alive(pgid: int) -> bool:
    """Whether the group has a member left (reaping those that are this process's children,
    as where infergy runs as a container's first process and inherits orphans)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-pgid, os.WNOHANG)[0]:
            pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
