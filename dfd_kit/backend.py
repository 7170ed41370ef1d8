"""Jittor set-up, done once when dfd_kit is imported.

Jittor configures itself from environment variables read at its own import, so
everything here must run *before* ``import jittor``:

* ``nvcc_path``: Jittor picks up any ``nvcc`` on the PATH and then fails on a
  machine without a GPU. We hand it CUDA only when a GPU is really present.
* oneDNN: Jittor downloads its own oneDNN build at first import, which fails
  offline, and its oneDNN operators need oneDNN 2 (oneDNN 3 removed their API). We
  put a oneDNN 2 where Jittor looks for its download (:mod:`dfd_kit.onednn`: the
  Python environment's own from PyPI first, then the system's), so nothing is
  fetched. Without one, or where its operators fail to compile, convolutions run
  on Jittor's generated kernels (~60x slower on CPU), with one warning.
* A pinned cache (``DFD_KIT_JITTOR_CACHE``, set on Binder): Jittor keys its compile
  cache on the host name and CPU model and compiles for ``-march=native``, so a cache
  built in an image's postBuild is never found in the session (another host name)
  and may not run there (another CPU). With the variable set, Jittor compiles into
  that folder for a portable x86-64 baseline.
* Compilers: Jittor forks (host RAM // 3 GB) compiler processes at every import, however
  little the container may use, and keeps them even when its cache is complete. We check
  the cache first and start compilers only for a command that is not in it: one per core,
  within the memory limit (:func:`compile_procs`).
* Signal handlers: Jittor's core installs C handlers when it loads. Two of them end the
  whole process with ``quick_exit(1)``, which loses Python's buffered output and skips
  every ``finally``: SIGCHLD, whenever *any* child process dies of a signal (a notebook
  kernel shut down with SIGKILL, a killed ``node``), and SIGINT outside Jupyter (Ctrl-C).
  Python's own handlers are put back right after ``import jittor``
  (:class:`_JittorImportHook`), so Ctrl-C raises KeyboardInterrupt again.
* Notebook kernels: in Jupyter, Jittor points C++'s ``std::cout``/``std::cerr`` at
  ``sys.stdout``/``sys.stderr``, and then calls those Python objects from its compiler
  threads without holding the GIL. A kernel that compiled new operators while Python
  threads were busy (a tqdm bar, ipykernel's output thread) died of a segfault, silently:
  notebook 06 in every fresh run. ipykernel (6 and later) already forwards whatever is
  written to file descriptors 1 and 2 into the notebook, so we keep C++ output on them
  (:func:`_keep_cpp_output_on_file_descriptors`) and lose nothing.
* Quiet notebooks: Jittor's info and warning lines are off (``log_silent``), and in a
  notebook its operator compiler's progress lines are dropped (:class:`_DropCompileProgress`):
  they arrive only once compiling is over and render like errors. Errors stay visible.
* Progress instead: the first run on a machine compiles Jittor's core for minutes, silently;
  dfd_kit shows a progress bar while it does (:class:`_CompileProgress`), and
  :func:`warm_up` compiles a generation's kernels ahead with one.
* numpy's float limits are computed before Jittor loads its first kernel
  (:func:`_cache_float_limits`): the kernels turn on flush-to-zero, under which numpy warns.

The patches to Jittor's own functions and module state sit in one section below ("Patches to
Jittor's own code and state"), each naming the upstream issue it works around, written for
:data:`PINNED_JITTOR` and applied to another Jittor only where that is safe, with one warning.
"""
from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import platform
import re
import sys
import time
import warnings

from . import onednn

#: Names a fixed folder for Jittor's compiled core and kernels, whatever the host (Binder sets it).
PINNED_CACHE_ENV = "DFD_KIT_JITTOR_CACHE"
# What Intel Haswell and AMD Zen onwards run (AVX2, FMA, F16C: Jittor's MPI wrapper needs AVX
# and F16C, so x86-64-v2 fails to compile). gcc takes the last -march, so this beats native.
_PORTABLE_X86_FLAGS = " -march=x86-64-v3 -mtune=generic "
# Memory one Jittor compiler process may take at its peak (its own rule of thumb is 3 GB).
_GB_PER_COMPILER = 1.0

#: What the backend set-up found; filled in by :func:`configure`.
info: dict = {}


def gpu_present() -> bool:
    """True when an NVIDIA GPU is visible to this process (not merely nvcc installed)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _jittor_home() -> str:
    """Where Jittor will keep its cache: $JITTOR_HOME, else the home Jittor remembered in
    ~/.cache/jittor/config.json (it writes one there whenever it runs with $JITTOR_HOME
    set, and uses it from then on), else the user's home."""
    if os.environ.get("JITTOR_HOME"):
        return os.environ["JITTOR_HOME"]
    try:
        import json

        with open(os.path.join(os.path.expanduser("~"), ".cache", "jittor", "config.json")) as f:
            remembered = json.load(f).get("JITTOR_HOME")
        if remembered:
            return remembered
    except (OSError, ValueError, AttributeError):
        pass
    return os.path.expanduser("~")


class OneDNNWarning(UserWarning):
    """Jittor runs without oneDNN, or with another oneDNN than dfd_kit chose."""


_warned: list = []


def warn_once(message: str) -> None:
    """Warn about the CPU back-end at most once per process, whatever goes wrong after,
    attributed to the first caller outside dfd_kit, Jittor and the import machinery (the
    ``import dfd_kit`` or the line that made Jittor compile)."""
    if _warned:
        return
    _warned.append(message)
    level, frame, ours = 2, sys._getframe(1), os.path.dirname(os.path.abspath(__file__))
    while frame is not None:
        name = frame.f_code.co_filename
        bootstrap = "importlib" in name and "_bootstrap" in name   # warnings skips these itself
        if not (bootstrap or name.startswith(ours) or f"{os.sep}jittor{os.sep}" in name):
            break
        level, frame = level + (not bootstrap), frame.f_back
    warnings.warn(message, OneDNNWarning, stacklevel=level)


def _without_onednn(reason: str) -> None:
    """Turn Jittor's oneDNN off (read at its import; child processes inherit it) and say so
    once: why, what it costs, what to install. Returns None, the oneDNN now in use."""
    os.environ["use_mkl"] = "0"
    info.update(onednn=False, onednn_include=None)
    warn_once(f"dfd_kit: {reason}. Jittor runs its own convolutions instead: correct, but about "
              f"60x slower on the CPU. For the fast ones, {onednn.advice()}.")


def _set_up_onednn():
    """Give Jittor a oneDNN 2 in its download folder and load its library. Returns the
    :class:`onednn.OneDNN` Jittor will use (linked into :func:`onednn.jittor_folder`), or
    None (oneDNN turned off, one warning)."""
    home = _jittor_home()
    present = onednn.linked(home)
    if isinstance(present, onednn.OneDNN) and present.source == "Jittor's download":
        chosen = present   # Jittor's own files (a 2.2 it downloaded once): never replaced
    else:
        found, rejected = onednn.find()
        if found is None:
            return _without_onednn(f"no oneDNN {onednn.MAJOR} for Jittor 1.3, whose oneDNN operators "
                                   f"oneDNN 3 does not compile (found: {'; '.join(rejected) or 'none'})")
        folder = onednn.jittor_folder(home)
        chosen = found
        try:
            onednn.link(found, home)
        except OSError as e:
            if not isinstance(present, onednn.OneDNN):
                return _without_onednn(f"could not link {found} into Jittor's folder {folder} ({e})")
            warn_once(f"dfd_kit: could not link {found} into Jittor's folder {folder} ({e}); "
                      f"Jittor uses the {present} linked there before.")
            chosen = present
    try:
        onednn.preload(chosen)
    except OSError as e:
        return _without_onednn(f"could not load {chosen.lib} ({e})")
    return chosen


def error_summary(e: Exception) -> str:
    """One short line for a Jittor compile error (its message is the whole command line)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    failed = re.search(r'Run cmd failed: "[^"]+" "([^"]+)"', text)
    if failed:   # the compiler's own messages went to stderr already
        return f"the compiler failed on {os.path.basename(failed.group(1))}; its errors are above"
    return (text.splitlines() or [type(e).__name__])[0][:300]


def _cgroup_memory_levels():
    """(limit, usage) in bytes for each memory-limited cgroup (v2 or v1) that holds this
    process: its own cgroup and every parent."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        num, controllers, rel = line.split(":", 2)
        if num == "0" and controllers == "":
            base, limit_name, usage_name = "/sys/fs/cgroup", "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base, limit_name, usage_name = "/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        folder = os.path.normpath(base + rel)
        while folder.startswith(base):
            try:
                with open(os.path.join(folder, limit_name)) as f:
                    text = f.read().strip()
                if text.isdigit() and int(text) < 1 << 60:  # v1 writes "no limit" as a huge number
                    try:
                        with open(os.path.join(folder, usage_name)) as f:
                            usage = int(f.read().strip())
                    except (OSError, ValueError):
                        usage = 0
                    yield int(text), usage
            except OSError:
                pass
            folder = os.path.dirname(folder)


def memory_limit_bytes() -> int | None:
    """The tightest cgroup memory limit (v2 or v1) over this process's cgroup and its parents."""
    limits = [limit for limit, _ in _cgroup_memory_levels()]
    return min(limits) if limits else None


def memory_headroom_bytes() -> int | None:
    """What the tightest of those cgroups still allows (limit minus usage); None if unlimited."""
    room = [limit - usage for limit, usage in _cgroup_memory_levels()]
    return min(room) if room else None


def compile_procs() -> int:
    """How many compilers to run at once: one per core, within the memory limit if any.

    Jittor sizes its pool from the machine's RAM, not the container's limit, so on a
    2 GB Binder node with 64 GB of host RAM it would start 16 compilers and be killed.
    """
    procs = os.cpu_count() or 1
    limit = memory_limit_bytes()
    if limit is not None:
        procs = min(procs, int(limit / 2**30 / _GB_PER_COMPILER))
    return max(1, min(procs, 16))


class _CompileProgress:
    """A progress bar while Jittor compiles (on a new machine, its core takes minutes and
    prints nothing: log_silent is on, and its own progress line would be one more pink
    block in a notebook). Used as a context manager around whatever may compile (the
    import of jittor, a batch of compile commands); the bar appears at :meth:`start` or the
    first :meth:`advance`, so nothing shows when everything is cached, and it is closed,
    with a summary line, when the outermost block ends. Nested blocks share it."""

    DESC = "Jittor is compiling for this machine (first run only; cached after)"

    def __init__(self):
        self.bar, self.depth, self.began = None, 0, 0.0

    def __enter__(self):
        self.depth += 1
        return self

    def start(self):
        if self.bar is None:
            from .progress import tqdm

            # short lines: ipywidgets cuts a widget's text form (what a saved notebook shows) at 110
            self.began = time.time()
            self.bar = tqdm(total=None, desc=self.DESC, unit=" file", leave=True,
                            bar_format="{desc}: {n_fmt} files compiled [{elapsed}]")

    def advance(self, files: int):
        self.start()
        self.bar.update(files)

    def __exit__(self, exc_type, *_):
        self.depth -= 1
        if self.depth or self.bar is None:
            return
        bar, self.bar = self.bar, None
        if exc_type is None:
            seconds = int(time.time() - self.began)
            bar.bar_format = "{desc}"
            bar.set_description_str(f"Jittor compiled {bar.n} files for this machine in {seconds // 60} min "
                                    f"{seconds % 60:02d} s (cached from now on)", refresh=False)
        bar.close()


_compile_progress = _CompileProgress()


def _jittor_core_missing() -> bool:
    """True when Jittor's compiled core is not in its cache yet: ``import jittor`` is about
    to compile it (minutes). Read after jittor_utils has fixed its cache path."""
    import jittor_utils

    return not glob.glob(os.path.join(jittor_utils.cache_path, "jittor_core*"))


def _cache_float_limits() -> None:
    """Have numpy work out its float limits now, before Jittor loads its first kernel.

    Jittor compiles its kernels with -Ofast, and gcc (before 13) links such a shared library
    with crtfastmath, whose constructor turns on flush-to-zero and denormals-are-zero in the
    loading thread. numpy computes ``np.finfo`` lazily, once per type; under
    denormals-are-zero its smallest subnormal compares equal to 0 and numpy warns "The value
    of the smallest subnormal for <class 'numpy.float32'> type is zero" (matplotlib asks for
    finfo when it draws an image: notebooks 03 and 04 showed it). Worked out now, the values
    are the true ones and cached, and no warning comes. The flush-to-zero mode itself is
    Jittor's choice for its kernels and stays.
    """
    import numpy as np

    for t in (np.float16, np.float32, np.float64, np.longdouble):
        np.finfo(t)


class _DropCompileProgress:
    """Wraps a notebook kernel's ``sys.stderr.write`` (and ``flush``) to drop Jittor's
    operator-compile progress: ``"\\nCompiling Operators(3/8) used: 20.5s eta: 34.2s \\r...\\n"``,
    which its parallel compiler writes to ``std::cerr`` whatever ``log_silent`` says. Jittor
    holds the GIL while it compiles, so in a notebook these lines arrive only when compiling
    is over (ipykernel forwards file descriptor 2 from a Python thread): no progress, just a
    block that renders like an error (notebook 06 showed 2 kB of it). Everything else,
    errors included, passes unchanged.

    ipykernel forwards file descriptor 2 in pieces: the newline Jittor writes first usually
    comes alone, and long runs are cut every 1000 bytes. So a last newline, or an end that
    may be the start of a progress line, is held back until the next piece shows what it is,
    or until the stream is flushed (ipykernel flushes at the end of every cell).
    """

    LINE = re.compile(r"Compiling Operators\(\d+/\d+\) used: *[0-9.e+-]+s eta: *[0-9.e+-]+s \r")
    RUN = re.compile(r"\n?(?:" + LINE.pattern + r")+(\n?)")
    START = "Compiling Operators("

    def __init__(self, stream):
        import threading

        self.write_on, self.flush_on = stream.write, stream.flush
        self.held, self.after_run, self.lock = "", False, threading.Lock()

    def write(self, text: str):
        with self.lock:
            out = self._filter(text)
            if out:
                self.write_on(out)
        return len(text)

    def flush(self):
        with self.lock:
            held, self.held = self.held, ""
            if held:
                self.write_on(held)
        return self.flush_on()

    def _filter(self, new: str) -> str:
        if self.after_run and new.startswith("\n"):
            new = new[1:]   # the newline that ends a run of progress lines, cut off from it
        text, self.held, self.after_run = self.held + new, "", False
        out, last = [], 0
        for m in self.RUN.finditer(text):
            out.append(text[last:m.start()])
            last = m.end()
            self.after_run = last == len(text) and not m.group(1)
        tail = text[last:]
        cut = self._unfinished(tail)
        self.held = tail[cut:]
        out.append(tail[:cut])
        return "".join(out)

    def _unfinished(self, text: str) -> int:
        """Where the end of *text* that may still turn out to be progress starts (len: none):
        an unfinished progress line, or a last newline (Jittor's first, before a run)."""
        at = text.rfind(self.START)
        if at < 0 or "\n" in text[at:] or "\r" in text[at:]:   # none unfinished
            at = len(text)
            for k in range(min(len(self.START) - 1, len(text)), 0, -1):
                if text.endswith(self.START[:k]):
                    at = len(text) - k
                    break
        if at == len(text) and text.endswith("\n"):
            return at - 1
        if 0 < at < len(text) and text[at - 1] == "\n":
            at -= 1
        return at


def _quiet_notebook_stderr() -> bool:
    """In a Jupyter kernel, filter Jittor's compile progress out of sys.stderr
    (:class:`_DropCompileProgress`). Returns True if it did."""
    stream = sys.stderr
    if "ipykernel" not in sys.modules or not type(stream).__module__.startswith("ipykernel"):
        return False
    if isinstance(getattr(stream.write, "__self__", None), _DropCompileProgress):
        return True   # wrapped already
    wrap = _DropCompileProgress(stream)
    stream.write, stream.flush = wrap.write, wrap.flush
    return True


#: Free memory the process heap may keep at its top for reuse (see _reuse_freed_buffers).
_HEAP_TRIM_BYTES = 512 << 20


def _reuse_freed_buffers() -> bool:
    """Make glibc keep freed large buffers for reuse instead of handing them back to the OS.

    Jittor's oneDNN convolutions allocate their working copies (oneDNN's blocked layouts)
    afresh on every call. glibc serves any block over its mmap threshold (at most 32 MB;
    one 32-channel 512 x 512 map is 34 MB) with a new mapping, and the kernel zero-fills
    every page of it on first touch, so at full size each 512 x 512 convolution paid for
    its memory again: a 32 -> 32 3x3 conv took 115 ms, 52 ms with the buffers reused
    (bench/README.md). With mmap off, large blocks come from the heap, and up to
    ``_HEAP_TRIM_BYTES`` of free heap stays mapped for the next call. Peak memory is
    unchanged (bench/bench_memory.py). Linux with glibc only; elsewhere nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):   # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_max = -1, -4   # glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, _HEAP_TRIM_BYTES))


# ---------------------------------------------------------------------------
# Patches to Jittor's own code and state
#
# Everything that replaces or wraps a function of Jittor's, or sets its module state, is
# here; configure() applies it (the import hook at `import jittor`). Each patch was written
# for PINNED_JITTOR, says what it works around and upstream's record of it, and is applied
# to another Jittor only where that is safe (_jittor_patches), with one warning.
# ---------------------------------------------------------------------------

#: The Jittor the patches below were written for and tested on (pyproject.toml pins it).
PINNED_JITTOR = "1.3.11.0"

#: Whether each patch is applied to a Jittor other than PINNED_JITTOR. False: it replaces
#: Jittor internals whose names and arguments may have changed, so it is left out and Jittor
#: does that its own way; True: it only wraps or restores something, harmless if Jittor changed.
_PATCHES_ON_OTHER_JITTOR = {
    "pinned cache": False,                     # _pin_jittor_cache
    "compilers on demand": False,              # _start_compilers_on_demand
    "C++ output on file descriptors": True,    # _keep_cpp_output_on_file_descriptors
    "oneDNN operators may fail": True,         # _tolerate_failed_onednn_ops
    "Python's signal handlers": True,          # _JittorImportHook
}


def jittor_version() -> str | None:
    """The installed Jittor's version (None: no Jittor), read as jittor_utils reads it, from
    the ``__version__`` line of jittor/__init__.py, without importing Jittor (importlib.metadata
    would add a third to ``import dfd_kit``)."""
    spec = importlib.util.find_spec("jittor")
    if spec is None:
        return None
    try:
        with open(spec.origin, encoding="utf8") as f:
            for line in f:
                m = re.match(r"""__version__\s*=\s*['"]([^'"]+)['"]""", line)
                if m:
                    return m.group(1)
    except (OSError, TypeError):   # TypeError: no origin (a namespace package)
        pass
    return "(version unknown)"


def _jittor_patches(version: str | None) -> dict:
    """{patch: apply it?} for Jittor *version* (see :data:`_PATCHES_ON_OTHER_JITTOR`)."""
    return {name: version == PINNED_JITTOR or elsewhere for name, elsewhere in _PATCHES_ON_OTHER_JITTOR.items()}


def _unpinned_jittor_message(version: str | None, patches: dict) -> str | None:
    """What to warn when *version* is not the pinned Jittor (None when it is)."""
    if version == PINNED_JITTOR:
        return None
    skipped = [name for name, on in patches.items() if not on]
    untested = [name for name, on in patches.items() if on]
    return (f"dfd_kit: Jittor {version} is installed, and dfd_kit's patches to "
            f"Jittor were made for {PINNED_JITTOR}: left out ({', '.join(skipped)}), applied untested "
            f"({', '.join(untested)}). For the tested set-up: pip install jittor=={PINNED_JITTOR}")


def _pin_jittor_cache(folder: str) -> str:
    """Point Jittor's compile cache at *folder*, with portable flags. Returns the cache path.

    Works around: Jittor keys its cache folder on the host name and CPU model and compiles
    for -march=native, so a cache built in an image (Binder's postBuild) is never found in
    the session: everything compiles again, for minutes. Upstream: no issue found.
    Another Jittor: skipped (it sets jittor_utils.cache_path and its lock, internals that
    may have changed); Jittor then keeps its own cache, which is slower to start, no worse.
    """
    flags = os.environ.get("cc_flags", "")
    # Child processes inherit the variable; adding the flags twice would change every compile
    # command, and Jittor would recompile everything.
    if platform.machine() in ("x86_64", "AMD64") and _PORTABLE_X86_FLAGS.strip() not in flags:
        os.environ["cc_flags"] = flags + _PORTABLE_X86_FLAGS
    import jittor_utils  # works out its host-keyed cache path on import; jittor reads it later
    from jittor_utils import lock

    keyed = jittor_utils.cache_path
    # Keep what does change the binaries (Jittor, compiler, Python); drop host name and CPU.
    toolchain = f"jt{jittor_utils.get_jittor_version()}-{jittor_utils.cc_type}" \
                f"{jittor_utils.get_version(jittor_utils.cc_path)[1:-1]}-py{platform.python_version()}"
    path = os.path.join(os.path.abspath(folder), toolchain)
    os.makedirs(path, exist_ok=True)
    if keyed in sys.path:
        sys.path.remove(keyed)
    sys.path.append(path)
    jittor_utils.cache_path = path
    lock_path = os.path.join(path, "jittor.lock")
    open(lock_path, "a").close()
    lock.jittor_lock = lock.Lock(lock_path)
    try:
        os.removedirs(keyed)  # the empty host-keyed folders it just made
    except OSError:
        pass
    return path


def _start_compilers_on_demand(procs: int) -> None:
    """Make Jittor fork compilers only when something is missing from its cache, and then
    *procs* of them (:func:`compile_procs`) instead of (host RAM // 3 GB).

    At every import Jittor hands the ~160 compile commands of its core to
    ``jittor_utils.run_cmds``, which forks its pool before asking the cache, and keeps the
    pool for the life of the process: 7 idle compilers in every Python process and notebook
    kernel on a 24 GB, 2-core machine, 16 on a large host, and in a memory-limited container
    (a class JupyterHub, Binder) enough compilers on a cold cache to be killed. Here the
    commands are first put to the cache in this process (``do_compile`` answers a cached one
    at once, as Jittor's single-process mode does); at the first one that really compiles,
    the rest go to the pool. Jittor reads the memory that sizes the pool through
    ``jittor_utils.get_total_mem``, so we answer for it.

    What really compiles is counted on :data:`_compile_progress`'s bar: the pool reports each
    finished command to ``jittor_utils.DelayProgress`` (its own progress line, silent under
    ``log_silent``), which :class:`_CountCompiledFiles` stands in for.

    Upstream: no issue found for the pool forked before the cache is asked; related,
    Jittor/jittor#493 (the pool is sized from the host's RAM) and Jittor/JittorLLMs#126 (a
    2 GB machine killed while Jittor compiled).
    Another Jittor: skipped (it replaces run_cmds, DelayProgress and get_total_mem, whose
    arguments may have changed); Jittor then starts its own pool.
    """
    import jittor_utils

    jittor_utils.get_total_mem = lambda: procs * 3 * 2**30
    pooled = jittor_utils.run_cmds

    def run_cmds(cmds, cache_path, jittor_path, msg="run_cmds"):
        for i, cmd in enumerate(cmds):
            if jittor_utils.do_compile([cmd, cache_path, jittor_path]):   # True: it compiled
                with _compile_progress:
                    _compile_progress.advance(1)
                    rest = cmds[i + 1:]
                    return pooled(rest, cache_path, jittor_path, msg) if rest else None

    jittor_utils.run_cmds = run_cmds
    jittor_utils.DelayProgress = _CountCompiledFiles


class _CountCompiledFiles:
    """Stands in for ``jittor_utils.DelayProgress(msg, n)``, which Jittor's pooled
    ``run_cmds`` tells of every finished command (``update(i)``, i counting from 0)."""

    def __init__(self, msg, n):
        self.done = 0

    def update(self, i):
        _compile_progress.advance(i + 1 - self.done)
        self.done = i + 1


def _keep_cpp_output_on_file_descriptors() -> bool:
    """In a Jupyter kernel, stop Jittor from redirecting C++ output into Python's streams
    (see the module docstring). Returns True if it would have done so.

    Jittor decides with ``jittor_utils.is_in_ipynb``, read when its compiled helpers load
    (in ``import jittor``); clearing it first keeps ``std::cerr`` on file descriptor 2.
    Logs stay synchronous, as Jittor makes them in notebooks (``log_sync``: its default),
    so they keep their order.

    Works around: the segfault of a kernel that compiles while Python threads run (see the
    module docstring). Upstream: no issue found; symptom: the kernel dies silently while
    Jittor compiles (notebook 06 in every fresh run).
    Another Jittor: applied (False is what Jittor has outside notebooks, a mode every
    version runs in).
    """
    if "ipykernel" not in sys.modules:
        return False
    import jittor_utils

    if not getattr(jittor_utils, "is_in_ipynb", False):
        return False
    jittor_utils.is_in_ipynb = False
    return True


def _tolerate_failed_onednn_ops(compile_custom_ops):
    """Jittor's compile_custom_ops, except that Jittor's oneDNN operators failing to compile
    turn oneDNN off (one warning, ``mkl_ops`` None) instead of failing ``import jittor``.

    Works around: ``import jittor`` failing outright when its oneDNN operators do not compile
    (oneDNN 3 removed the API they use). Upstream: no issue found; symptom: the import ends
    with the compiler's errors on mkl_conv_op and the like.
    Another Jittor: applied (it acts only on a failure it recognises, and re-raises the rest).
    """
    def compile_or_none(filenames, *args, **kwargs):
        try:
            return compile_custom_ops(filenames, *args, **kwargs)
        except Exception as e:
            if not any(f"{os.sep}mkl{os.sep}" in str(f) for f in filenames):
                raise
            _without_onednn(f"Jittor's oneDNN operators did not compile against "
                            f"{info.get('onednn') or 'oneDNN'} ({error_summary(e)})")
            return None
    return compile_or_none


class _JittorImportHook(importlib.abc.MetaPathFinder):
    """Import hook: when ``jittor`` is imported, make it start compilers only on demand
    (:func:`_start_compilers_on_demand`), fix numpy's float limits (:func:`_cache_float_limits`),
    show a progress bar if its core compiles (:class:`_CompileProgress`), then put back the
    SIGCHLD and SIGINT handlers that were in place before its core replaced them (see the
    module docstring); when its
    ``compile_extern`` is, let its oneDNN operators fail to compile without failing the import
    (:func:`_tolerate_failed_onednn_ops`).

    It finds each module's spec through the other finders and wraps the loader's exec_module,
    then leaves sys.meta_path: Jittor is imported once per process.

    The signal handlers work around Jittor's core ending the process with quick_exit(1) on
    SIGCHLD and SIGINT. Upstream: no Jittor/jittor issue found; the quick exit is reported
    in Jittor/JittorLLMs#133 and #35 ("Caught SIGCHLD. Maybe out of memory ... quick exit").
    Another Jittor: applied (it only puts back Python's own handlers).

    compile_procs: the compilers for :func:`_start_compilers_on_demand`, None to leave
    Jittor's pool alone; restore_signals, tolerate_onednn: the other two patches, on or off
    (the three as :func:`_jittor_patches` says for the installed Jittor).
    """

    def __init__(self, compile_procs: int | None, restore_signals: bool = True, tolerate_onednn: bool = True):
        self.compile_procs, self.restore_signals = compile_procs, restore_signals
        self.pending = {"jittor", "jittor.compile_extern"} if tolerate_onednn else {"jittor"}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.pending:
            return None
        self.pending.discard(fullname)
        if not self.pending:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)   # this finder passes on it now
        if spec is None or spec.loader is None:
            return spec
        if fullname == "jittor.compile_extern":
            return self._guard_compile_extern(spec)
        # Here rather than in configure(): jittor_utils reads its settings (JITTOR_HOME,
        # log_v, ...) from the environment when imported, which a user may still change
        # between `import dfd_kit` and `import jittor`.
        if self.compile_procs is not None:
            _start_compilers_on_demand(self.compile_procs)
        _cache_float_limits()   # before Jittor's first kernel turns on flush-to-zero
        import signal

        import threading

        # only the main thread may set handlers; jittor is imported there in practice
        main = threading.current_thread() is threading.main_thread()
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGCHLD, signal.SIGINT)} \
            if main and self.restore_signals else {}
        exec_module = spec.loader.exec_module

        def exec_then_restore(module):
            try:
                with _compile_progress:
                    if _jittor_core_missing():
                        _compile_progress.start()   # at once: its first compile takes a while
                    exec_module(module)
            finally:
                for sig, handler in saved.items():
                    signal.signal(sig, signal.SIG_DFL if handler is None else handler)

        spec.loader.exec_module = exec_then_restore
        return spec

    @staticmethod
    def _guard_compile_extern(spec):
        # compile_extern compiles the oneDNN operators with the compile_custom_ops it star-imports
        # from jittor.compiler (imported by then), at its own import
        exec_module = spec.loader.exec_module

        def exec_tolerant(module):
            compiler = sys.modules.get("jittor.compiler")
            original = getattr(compiler, "compile_custom_ops", None)
            if original is not None:
                compiler.compile_custom_ops = _tolerate_failed_onednn_ops(original)
            try:
                exec_module(module)
            finally:
                if original is not None:
                    compiler.compile_custom_ops = original

        spec.loader.exec_module = exec_tolerant
        return spec


# ---------------------------------------------------------------------------
# End of the patches to Jittor
# ---------------------------------------------------------------------------


def configure() -> dict:
    """Set Jittor's environment before it is imported. Safe to call more than once."""
    if info:
        return info
    if "jittor" in sys.modules:
        warnings.warn("jittor was imported before dfd_kit; dfd_kit could not configure it "
                      "(GPU detection, offline oneDNN, notebook-safe output). Import dfd_kit first.",
                      stacklevel=3)
    use_cuda = gpu_present()
    if not use_cuda:
        os.environ["nvcc_path"] = ""
    # Passive OpenMP waits: spinning threads make Jittor 4-5x slower whenever the CPU is
    # shared (a notebook kernel beside JupyterLab, parallel test runs), measured here.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("log_silent", "1")  # Jittor's compile log is noise for notebook users
    # Jittor logs "Load log_sync: 1" at every import when $log_sync is set: log.cc reads that
    # flag before log_silent, which cannot hide it. 1 is its default, so the variable says
    # nothing (Jittor itself sets it in notebooks, where dfd_kit stops it: see below).
    if os.environ.get("log_sync") == "1":
        del os.environ["log_sync"]
    dnnl = None
    if os.environ.get("use_mkl", "1") == "1" and "jittor" not in sys.modules:
        # without one, oneDNN is turned off, so Jittor does not try (and fail) to download it
        dnnl = _set_up_onednn()
    version = jittor_version()
    patches = _jittor_patches(version)
    unpinned = _unpinned_jittor_message(version, patches)
    if unpinned and version is not None:   # no Jittor at all: `import jittor` says so
        warnings.warn(unpinned, stacklevel=3)
    pinned = os.environ.get(PINNED_CACHE_ENV) if patches["pinned cache"] else None
    cache = _pin_jittor_cache(pinned) if pinned and "jittor" not in sys.modules else None
    heap = _reuse_freed_buffers()
    fd_output, procs = False, None
    if "jittor" not in sys.modules:
        # after the cache is pinned: importing jittor_utils fixes its cache path
        fd_output = patches["C++ output on file descriptors"] and _keep_cpp_output_on_file_descriptors()
        _quiet_notebook_stderr()
        procs = compile_procs() if patches["compilers on demand"] else None
        sys.meta_path.insert(0, _JittorImportHook(procs, restore_signals=patches["Python's signal handlers"],
                                                  tolerate_onednn=patches["oneDNN operators may fail"]))
    # onednn: what Jittor compiles its oneDNN operators against (False: none); onednn_include:
    # the headers dfd_kit.fast.kernels compiles its own against (the same, as Jittor's folder links them)
    info.update(cuda=use_cuda, onednn=str(dnnl) if dnnl else False,
                onednn_include=os.path.join(onednn.jittor_folder(_jittor_home()), "include") if dnnl else None,
                pinned_cache=cache, heap_reuse=heap,
                cpp_output_on_fds=fd_output, compile_procs=procs, jittor=version,
                jittor_patches=[name for name, on in patches.items() if on])
    return info


def warm_up(model=None, progress: bool = True):
    """Compile now, with a progress bar, what Jittor needs to turn a sketch into a face.

    On a machine whose Jittor cache is empty, ``import jittor`` compiles Jittor's core (a
    few minutes, with a bar of its own: :class:`_CompileProgress`), and then the first
    generation compiles the kernels of every network (about half a minute more), which
    Jittor does holding the interpreter: no bar can move while a network compiles. This
    runs one generation network by network, and once one of them has compiled something
    (new files in Jittor's kernel cache) shows a bar that moves between them. Jittor keeps
    what it compiled (in ~/.cache/jittor), so from the second time on this takes about as
    long as a generation and shows nothing.

    model: the model whose kernels to compile (from :func:`dfd_kit.load`); None: a randomly
    initialised model of the demo's size, which needs no Params (the kernels do not depend
    on the weights). progress=False: no bar. Returns the model.
    """
    import numpy as np

    import jittor as jt
    import jittor_utils

    from .config import COMPONENTS, DEMO
    from .examples import example_sketch
    from .pipeline import DeepFaceDrawing, build
    from .progress import tqdm

    if model is None:
        enc, dec, fdec, gen = build(DEMO)
        rng = np.random.default_rng(0)
        banks = {s: {c: rng.standard_normal((40, DEMO.nets.latent_dim)).astype(np.float32) for c in COMPONENTS}
                 for s in ("male", "female")}
        model = DeepFaceDrawing(DEMO, enc, dec, fdec, gen, banks)
    sketch = example_sketch(0, model.layout, procedural=True)
    kernels = os.path.join(jittor_utils.cache_path, "jit")

    def compiled() -> int:
        try:
            return len(os.listdir(kernels))
        except OSError:
            return 0

    began = time.time()
    shadows = model.shadows_fit_in_memory()
    state = {"bar": None, "done": 0, "files": compiled()}
    total = len(COMPONENTS) * (2 if shadows else 1) + 3

    def show():
        # short lines: ipywidgets cuts a widget's text form (what a saved notebook shows) at 110
        state["bar"] = tqdm(total=total, initial=state["done"], leave=True, unit=" network",
                            desc="Jittor compiles the kernels a face needs (first run only)",
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} networks [{elapsed}]")
        state["bar"].start_t = began   # its clock: from the first network, not from the bar
        state["bar"].refresh()

    def step():
        # A bar once something compiled, or at once with no kernels cached at all (a new
        # machine): a warm cache still takes a second or more (loading the networks, a busy
        # machine), and that needs no bar.
        state["done"] += 1
        if state["bar"] is None and progress and compiled() > state["files"]:
            show()
        elif state["bar"] is not None:
            state["bar"].update()

    if progress and state["files"] == 0:
        show()

    try:
        crops = model.crop(model.normalise(sketch))
        latents, queries = {}, {}
        for c in COMPONENTS:
            latents.update(model.encode({c: crops[c]}))
            queries.update(model.encode_queries({c: crops[c]}))
            step()
        projections = model.project(latents, queries=queries)
        if shadows:
            for c in COMPONENTS:
                model.shadow(c, projections[c], "male")
                step()
            jt.gc()
        feature_map, _ = model.feature_map({c: p.vector for c, p in projections.items()})
        step()
        model.synthesize(feature_map)
        step()
        model.generate(sketch, shadows=shadows)   # anything a whole generation adds
        step()
    finally:
        bar = state["bar"]
        if bar is not None:
            if bar.n == total:
                seconds = int(time.time() - began)
                bar.bar_format = "{desc}"
                bar.set_description_str(f"Jittor compiled the kernels a face needs in {seconds // 60} min "
                                        f"{seconds % 60:02d} s (cached from now on)", refresh=False)
            bar.close()
    return model
