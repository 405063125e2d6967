"""Ctrl-C a writer in a child process and time its end: the harness of the interrupt tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Interrupted:
    report: dict  # the JSON object the writer printed last
    signalled: float  # time.time() when Ctrl-C was sent
    to_exit: float  # seconds from Ctrl-C to the end of the process


def interrupt(
    argv: list[str],
    *,
    ready: str,
    after: float,
    stuck_marker: Path | None = None,
    process_group: bool = False,
    env: dict | None = None,
    timeout: float = 60,
) -> Interrupted:
    """Start ``argv``, wait for its first line to hold ``ready`` (and for ``stuck_marker`` to
    exist, when given), wait ``after`` seconds more, send SIGINT (to its whole process group
    with ``process_group``, as a terminal does to a foreground job) and wait for it to exit.
    The writer must exit with 0 and print a JSON report as its last line."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=process_group,
    )
    try:
        assert ready in proc.stdout.readline()
        if stuck_marker is not None:
            deadline = time.monotonic() + 60
            while not stuck_marker.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert stuck_marker.exists(), "the read never got stuck"
        time.sleep(after)
        if process_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        signalled = time.time()
        stdout, stderr = proc.communicate(timeout=timeout)
        to_exit = time.time() - signalled
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    return Interrupted(json.loads(stdout.strip().splitlines()[-1]), signalled, to_exit)
