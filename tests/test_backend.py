"""Jittor's set-up by dfd_kit.backend leaves the process's signal handling as Python's.

Jittor's core installs C handlers that end the process with quick_exit(1) when any child
process dies of a signal, and on Ctrl-C. A test run lost its summary and failed that way when
a notebook kernel was shut down with SIGKILL. Each case runs in a fresh interpreter with
buffered stdout, as under CI, so a quick exit shows as a lost line and exit status 1.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    import dfd_kit.backend
    dfd_kit.backend.configure()
    if sys.argv[1] == "without-hook":
        sys.meta_path[:] = [f for f in sys.meta_path
                            if not isinstance(f, dfd_kit.backend._RestoreSignalsAfterJittor)]
    import jittor
    print("jittor imported")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    child.wait()
    time.sleep(0.5)   # let a SIGCHLD handler run
    print("child killed, status", child.returncode)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
        print("no KeyboardInterrupt")
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
""")


def _run(mode: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "JPY_PARENT_PID")}
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                          env=env, timeout=600)


def test_killed_child_and_ctrl_c_leave_the_process_alive():
    out = _run("with-hook")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["jittor imported", "child killed, status -9", "KeyboardInterrupt"]


def test_without_the_hook_jittor_ends_the_process_on_a_killed_child():
    """The failure the hook prevents, so the test above is known to exercise it."""
    out = _run("without-hook")
    assert out.returncode == 1
    assert "child killed" not in out.stdout
