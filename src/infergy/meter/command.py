"""Run a command to its end under a meter (`infergy meter`): its exit status as a shell
reports it, Ctrl-C and SIGTERM passed on as a terminal would."""

from __future__ import annotations

import signal
import subprocess

# Exit codes of a command that never ran, as a shell would give them.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
# Seconds a command gets to end after Ctrl-C, before it is signalled, then killed.
INTERRUPT_GRACE_S = 2.0


def run_command(command: list[str]) -> tuple[int, bool]:
    """Run the command (no shell) to its end: (exit status as a shell reports it, whether it
    was interrupted).

    On Ctrl-C the terminal signals the command too: it gets INTERRUPT_GRACE_S to end by
    itself before it is sent SIGINT (for a signal sent to infergy alone), then killed after
    as long again. SIGTERM to infergy is handled the same way."""
    def _terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    interrupted = False
    proc = None
    try:
        # Started inside the try: a Ctrl-C right after the start still stops the command
        # (outside it, the command was left running, holding infergy's output open).
        proc = subprocess.Popen(command)
        code = proc.wait()
    except KeyboardInterrupt:
        interrupted = True
        code = _stop(proc) if proc is not None else -signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)
    return (128 - code if code < 0 else code), interrupted


def _stop(proc: subprocess.Popen) -> int:
    """After Ctrl-C: let the command end by itself, then send it SIGINT, then kill it.
    Another Ctrl-C moves on to the next step. Returns its exit status."""
    for step in (lambda: None, lambda: proc.send_signal(signal.SIGINT), proc.kill):
        try:
            if proc.poll() is None:
                step()
            return proc.wait(timeout=INTERRUPT_GRACE_S)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    return proc.wait()
