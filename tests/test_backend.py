"""Jittor's set-up by dfd_kit.backend: what it changes in the process Jittor runs in.

Signals. Jittor's core installs C handlers that end the process with quick_exit(1) when any
child process dies of a signal, and on Ctrl-C. A test run lost its summary and failed that way
when a notebook kernel was shut down with SIGKILL. Each case runs in a fresh interpreter with
buffered stdout, as under CI, so a quick exit shows as a lost line and exit status 1.

Notebook kernels. In Jupyter, Jittor routes C++ output through sys.stderr and calls it from
compiler threads without the GIL; notebook 06 died of the segfault in every fresh run. With
dfd_kit's set-up, C++ output stays on file descriptor 2 (which ipykernel forwards itself).

Compilers. Jittor forks (host RAM // 3 GB) compiler processes at every import, even when its
cache is complete, and keeps them; with dfd_kit's set-up it forks none then, and one per core,
within the container's memory limit, when something is missing from the cache.

Versions. The patches are written for the Jittor pyproject.toml pins; on another one, those
that replace Jittor's internals are left out, the rest applied, and one warning says which.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# dfd_kit's set-up, then with argument "without-hook" its import hook taken out again
SETUP = textwrap.dedent("""
    import signal
    import sys
    # Ctrl-C as a terminal's Python has it: a test run started in the background by a
    # non-interactive shell starts with SIGINT ignored, and Python then keeps it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import dfd_kit.backend
    dfd_kit.backend.configure()
    if sys.argv[1] == "without-hook":
        sys.meta_path[:] = [f for f in sys.meta_path
                            if not isinstance(f, dfd_kit.backend._JittorImportHook)]
""")

SCRIPT = SETUP + textwrap.dedent("""
    import os, signal, subprocess, time
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


def _run(mode: str, script: str = SCRIPT, drop=("PYTHONUNBUFFERED", "JPY_PARENT_PID"), args=()):
    """*script* in a fresh interpreter with arguments *mode* and *args*, without the
    environment variables *drop*."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run([sys.executable, "-c", script, mode, *args], capture_output=True, text=True,
                          env=env, timeout=900)


def test_killed_child_and_ctrl_c_leave_the_process_alive():
    out = _run("with-hook")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["jittor imported", "child killed, status -9", "KeyboardInterrupt"]


def test_without_the_hook_jittor_ends_the_process_on_a_killed_child():
    """The failure the hook prevents, so the test above is known to exercise it."""
    out = _run("without-hook")
    assert out.returncode == 1
    assert "child killed" not in out.stdout


KERNEL_CODE = textwrap.dedent("""
    import os, tempfile
    import dfd_kit.backend
    dfd_kit.backend.configure()
    if {jittor_redirects}:   # undo dfd_kit's setting: Jittor's own behaviour in a notebook
        import jittor_utils
        jittor_utils.is_in_ipynb = True
    import jittor, jittor_utils
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            jittor_utils.cc.log("test_backend.py:1", "w", 0, "marker from C++")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        print("C++ output on fd 2:", b"marker from C++" in f.read())
""")


def _in_kernel(jittor_redirects: bool) -> str:
    """Run KERNEL_CODE in a real ipykernel (C++ logging on) and return what it printed."""
    from jupyter_client.manager import start_new_kernel

    env = {k: v for k, v in os.environ.items() if k != "log_silent"}
    env["log_silent"] = "0"
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
    printed = []

    def keep(msg):
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            printed.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            printed.append("\n".join(msg["content"]["traceback"]))

    try:
        kc.execute_interactive(KERNEL_CODE.format(jittor_redirects=jittor_redirects),
                               timeout=600, output_hook=keep)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return "".join(printed)


def test_in_a_notebook_kernel_cpp_output_stays_on_the_file_descriptor():
    assert "C++ output on fd 2: True" in _in_kernel(jittor_redirects=False)


def test_jittor_alone_routes_cpp_output_through_python_in_a_kernel():
    """The redirect dfd_kit prevents, so the test above is known to exercise it."""
    assert "C++ output on fd 2: False" in _in_kernel(jittor_redirects=True)


POOL_SCRIPT = SETUP + textwrap.dedent("""
    import multiprocessing
    import jittor, jittor_utils
    # Jittor's own rule, from its memory probe (untouched without the hook)
    own = min(16, max(int(jittor_utils.get_total_mem() / 2**30 // 3), 1))
    print(jittor_utils.pool_size, len(multiprocessing.active_children()), own)
""")


def _compile_pool(mode: str, script: str = POOL_SCRIPT, args=()) -> list:
    """(Jittor's pool size, live child processes, ...) after *script* ran in a fresh
    interpreter (this one's Jittor was set up long ago), with the default Jittor cache."""
    out = _run(mode, script, drop=("DFD_KIT_JITTOR_CACHE",), args=args)
    assert out.returncode == 0, out.stdout + out.stderr
    return [int(x) for x in out.stdout.split()[-3:]]


@pytest.fixture(scope="module")
def complete_cache():
    """The default Jittor cache holding Jittor's core (compiled here if it lacks it)."""
    _compile_pool("with-hook")


def test_with_a_complete_cache_jittor_forks_no_compilers(complete_cache):
    pool, children, _ = _compile_pool("with-hook")
    assert (pool, children) == (0, 0)


def test_without_the_hook_jittor_forks_compilers_from_host_ram_at_every_import(complete_cache):
    """Jittor's own rule (RAM // 3 GB, 1 to 16), even though its compilers have nothing to
    do: the test above and the one below are known to change it."""
    from dfd_kit.backend import compile_procs

    pool, children, own = _compile_pool("without-hook")
    assert (pool, children) == (own, own)
    if own == compile_procs():   # a machine where both rules agree cannot show the difference
        pytest.skip(f"Jittor's rule and dfd_kit's both give {own} compilers here")


# Three tiny sources compiled through Jittor's compiler front door, run_cmds (as its own core
# is); prints the pool size, the live children and the sum of the objects' modification times.
COMPILE_SCRIPT = SETUP + textwrap.dedent("""
    import multiprocessing, os
    import jittor, jittor_utils
    folder, cmds, objects = sys.argv[2], [], []
    for i in range(3):
        src, obj = os.path.join(folder, f"f{i}.cc"), os.path.join(folder, f"f{i}.o")
        if not os.path.exists(src):
            with open(src, "w") as f:
                f.write(f"int f{i}() {{ return {i}; }}\\n")
        cmds.append(f'"{jittor_utils.cc_path}" "{src}" -c -o "{obj}"')
        objects.append(obj)
    jittor_utils.run_cmds(cmds, folder, folder)
    print(jittor_utils.pool_size, len(multiprocessing.active_children()),
          sum(os.stat(o).st_mtime_ns for o in objects))
""")


def test_compilers_start_at_the_first_command_missing_from_the_cache(tmp_path):
    from dfd_kit.backend import compile_procs

    pool, children, built = _compile_pool("with-hook", COMPILE_SCRIPT, [str(tmp_path)])
    assert (pool, children) == (compile_procs(), compile_procs())
    assert sorted(p.name for p in tmp_path.glob("*.o")) == ["f0.o", "f1.o", "f2.o"]
    # the same commands again: all in the cache, so nothing is compiled and nothing forked
    assert _compile_pool("with-hook", COMPILE_SCRIPT, [str(tmp_path)]) == [0, 0, built]


def test_compile_procs_follow_cores_and_the_cgroup_limit(monkeypatch):
    from dfd_kit import backend

    monkeypatch.setattr(backend.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(backend, "memory_limit_bytes", lambda: None)
    assert backend.compile_procs() == 8
    monkeypatch.setattr(backend, "memory_limit_bytes", lambda: 2 * 2**30)   # Binder: 2 GB
    assert backend.compile_procs() == 2
    monkeypatch.setattr(backend, "memory_limit_bytes", lambda: 512 * 2**20)
    assert backend.compile_procs() == 1
    monkeypatch.setattr(backend.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(backend, "memory_limit_bytes", lambda: None)
    assert backend.compile_procs() == 16


def test_the_patches_are_written_for_the_jittor_pyproject_pins():
    from pathlib import Path

    from dfd_kit import backend

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert f"jittor=={backend.PINNED_JITTOR}" in pyproject["project"]["dependencies"]
    assert backend.jittor_version() == backend.PINNED_JITTOR == backend.info["jittor"]


def test_on_another_jittor_the_patches_to_its_internals_are_left_out_and_the_warning_says_so():
    from dfd_kit import backend

    assert all(backend._jittor_patches(backend.PINNED_JITTOR).values())
    assert backend._unpinned_jittor_message(backend.PINNED_JITTOR, {}) is None
    other = backend._jittor_patches("1.3.12.0")
    # these replace Jittor's functions and state; the rest only wrap or restore
    assert [name for name, on in other.items() if not on] == ["pinned cache", "compilers on demand"]
    message = backend._unpinned_jittor_message("1.3.12.0", other)
    assert "1.3.12.0" in message and f"pip install jittor=={backend.PINNED_JITTOR}" in message
