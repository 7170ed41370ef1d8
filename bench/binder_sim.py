"""Simulate Binder here: build a pinned Jittor cache (the image's postBuild), then import in a
"session" under another host name and CPU model, with memory capped at 2 GB.

Used by bench/bench_binder_import.py (times and peak memory) and tests/test_binder.py.

* Another host name: ``unshare --uts`` and ``hostname``; another CPU model: ``unshare --mount``
  and a bind-mounted /proc/cpuinfo whose "model name" differs (Jittor keys its cache on both).
* The memory cap: a cgroup (v2, else v1) made under this process's own cgroup, which bounds
  the whole process tree (every compiler Jittor starts included) and reports its peak; where
  that is not writable, ``RLIMIT_AS`` per process (bounds each process, not their sum).
* Recompiles: every file of the pinned cache is listed with its mtime before the session;
  a file that is new or changed after it was compiled in the session.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GB = 2**30

# What the image's postBuild runs: the core at import, then a demo-size generation's kernels.
BUILD_CODE = f"import runpy; runpy.run_path({str(ROOT / 'scripts' / 'warmup.py')!r})"
# What the session's first notebook cell does, timed from the interpreter's start.
IMPORT_CODE = (
    "import time; t0 = time.time()\n"
    "import dfd_kit, dfd_kit.pipeline\n"
    "import jittor as jt\n"
    "print('IMPORT_S', time.time() - t0)\n"
    "print('CACHE', jt.flags.cache_path)\n"
)
# Then a demo-size generation (kernels compiled in the build), checked for a sane image.
GENERATE_CODE = IMPORT_CODE + (
    "import numpy as np\n"
    "from dfd_kit.config import COMPONENTS, DEMO\n"
    "from dfd_kit.pipeline import DeepFaceDrawing, build\n"
    "t1 = time.time()\n"
    "rng = np.random.default_rng(0)\n"
    "banks = {s: {c: rng.standard_normal((40, DEMO.nets.latent_dim)).astype(np.float32)\n"
    "             for c in COMPONENTS} for s in ('male', 'female')}\n"
    "model = DeepFaceDrawing(DEMO, *build(DEMO), banks)\n"
    "sketch = np.full((256, 256), 255, np.uint8); sketch[90:100, 60:110] = 0\n"
    "out = model.generate(sketch, shadows=True)\n"
    "img = np.asarray(out['image'] if isinstance(out, dict) else getattr(out, 'image', out))\n"
    "assert np.isfinite(img.astype(np.float64)).all() and img.std() > 0, 'blank or NaN image'\n"
    "print('GENERATE_S', time.time() - t1, img.shape)\n"
)


def environment(home: Path) -> dict:
    """A process environment whose Jittor home and pinned cache live under *home*."""
    env = dict(os.environ)
    env.update(HOME=str(home), DFD_KIT_JITTOR_CACHE=str(home / "jittor-cache"),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]))
    env.pop("JITTOR_HOME", None)  # Jittor would also write it into ~/.cache/jittor/config.json
    return env


def can_unshare() -> bool:
    """True when this user may make UTS and mount namespaces (root, or user namespaces)."""
    r = subprocess.run(["unshare", "--uts", "--mount", "true"], capture_output=True)
    return r.returncode == 0


def session_command(code: str, hostname: str, home: Path) -> list:
    """argv running *code* under another host name and another CPU model name."""
    fake = home / "cpuinfo"
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    fake.write_text("\n".join(("model name\t: Simulated Binder CPU" if l.startswith("model name") else l)
                              for l in lines) + "\n")
    script = (f"hostname {hostname} && mount --bind {fake} /proc/cpuinfo && "
              f'exec "$0" -c "$1"')
    return ["unshare", "--uts", "--mount", "sh", "-c", script, sys.executable, code]


class MemoryCap:
    """Cap a child process tree's memory: a cgroup if one can be made, else RLIMIT_AS."""

    def __init__(self, limit: int):
        self.limit, self.cgroup, self.version = limit, None, None
        for version, base in ((2, "/sys/fs/cgroup"), (1, "/sys/fs/cgroup/memory")):
            own = self._own_cgroup(version)
            marker = "cgroup.controllers" if version == 2 else "cgroup.procs"
            if own is None or not os.path.isfile(os.path.join(base, marker)):
                continue  # not a mounted cgroup hierarchy of that version
            path = Path(base + own) / f"dfd_binder_sim_{os.getpid()}"
            try:
                path.mkdir()
                if not (path / "cgroup.procs").is_file():  # a plain folder: not a cgroup
                    raise OSError("not a cgroup")
                if version == 2:
                    (path / "memory.max").write_text(str(limit))
                    (path / "memory.swap.max").write_text("0") if (path / "memory.swap.max").exists() else None
                else:
                    (path / "memory.limit_in_bytes").write_text(str(limit))
                self.cgroup, self.version = path, version
                break
            except OSError:
                if path.is_dir():
                    path.rmdir()
        self.method = (f"cgroup v{self.version} memory limit" if self.cgroup
                       else "RLIMIT_AS per process (no writable cgroup)")

    @staticmethod
    def _own_cgroup(version: int):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            num, controllers, path = line.split(":", 2)
            if (version == 2 and num == "0" and controllers == "") or \
               (version == 1 and "memory" in controllers.split(",")):
                return path
        return None

    def preexec(self):
        if self.cgroup is not None:
            (self.cgroup / "cgroup.procs").write_text(str(os.getpid()))
        else:
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (self.limit, self.limit))

    def peak(self):
        """Peak memory of the cgroup (page cache included), or None without one."""
        if self.cgroup is None:
            return None
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.cgroup / name).read_text())
        except (OSError, ValueError):
            return None

    def oom_killed(self) -> bool:
        if self.cgroup is None:
            return False
        try:
            if self.version == 2:
                events = dict(l.split() for l in (self.cgroup / "memory.events").read_text().splitlines())
                return int(events.get("oom_kill", 0)) > 0
            return int((self.cgroup / "memory.failcnt").read_text()) > 0 and \
                "oom_kill 1" in (self.cgroup / "memory.oom_control").read_text()
        except OSError:
            return False

    def close(self):
        if self.cgroup is not None:
            for _ in range(50):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _tree_rss(root: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    children, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
            rss[int(d)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_capped(argv: list, env: dict, limit: int = 2 * GB, timeout: float = 3600) -> dict:
    """Run *argv* with its memory capped; return its output, wall time and peak memory."""
    cap = MemoryCap(limit)
    peak_rss = 0
    try:
        t0 = time.time()
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, preexec_fn=cap.preexec)
        out = []
        reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
        reader.start()
        while proc.poll() is None:
            peak_rss = max(peak_rss, _tree_rss(proc.pid))
            if time.time() - t0 > timeout:
                proc.kill()
            time.sleep(0.2)
        reader.join()
        return dict(rc=proc.returncode, wall_s=time.time() - t0, output="".join(out),
                    peak_rss=peak_rss, peak_cgroup=cap.peak(), oom_killed=cap.oom_killed(),
                    method=cap.method)
    finally:
        cap.close()


def snapshot(cache: Path) -> dict:
    """Every file under *cache* with its modification time."""
    return {p: p.stat().st_mtime for p in cache.rglob("*") if p.is_file()} if cache.is_dir() else {}


def recompiled(before: dict, after: dict) -> list:
    """Compiled files (.so, .o) that are new or changed between two snapshots."""
    return sorted(str(p) for p, t in after.items()
                  if p.suffix in (".so", ".o") and before.get(p) != t)


def value(output: str, key: str):
    """The first value printed as ``KEY value`` by the simulated process."""
    for line in output.splitlines():
        if line.startswith(key + " "):
            return line.split(" ", 1)[1]
    return None


def fresh_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="dfd_binder_"))
    return home


def remove_home(home: Path):
    shutil.rmtree(home, ignore_errors=True)
