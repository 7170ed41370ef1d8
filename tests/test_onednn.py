"""Which oneDNN Jittor gets (dfd_kit.onednn, dfd_kit.backend), and what happens without one.

Jittor 1.3's oneDNN operators need oneDNN 2; oneDNN 3 (Ubuntu 24.04, Debian 13) removed their
API, and Jittor's first import then died compiling them. dfd_kit takes the Python environment's
oneDNN 2 (PyPI) first, a system oneDNN 2 second, reads the version from the headers before
Jittor sees them, and where none fits runs Jittor's own convolutions with one warning.

The first tests use folders that look like oneDNN installations (headers, a library file) and
need no Jittor. The last two run the demo model in the oneDNN-3 simulation
(scripts/onednn3_sim.sh: root, unshare --mount): a system oneDNN 3.2, and then no oneDNN 2 at
all. They share one pinned Jittor cache in .cache/onednn3_sim (the first run compiles Jittor,
several minutes on 2 cores; later runs take about a minute).
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from dfd_kit import backend, onednn

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / ".cache" / "onednn3_sim"


def _fake_onednn(prefix: Path, version: str, lib_dir: str = "lib") -> Path:
    """A folder that looks like an installed oneDNN *version*: headers and a library file."""
    major, minor, patch = version.split(".")
    inc = prefix / "include" / "oneapi" / "dnnl"
    inc.mkdir(parents=True)
    (inc / "dnnl_version.h").write_text(f"#define DNNL_VERSION_MAJOR {major}\n#define DNNL_VERSION_MINOR {minor}\n"
                                        f"#define DNNL_VERSION_PATCH {patch}\n")
    (prefix / "include" / "dnnl.hpp").write_text('#include "oneapi/dnnl/dnnl.hpp"\n')
    (prefix / "include" / "dnnl_version.h").write_text('#include "oneapi/dnnl/dnnl_version.h"\n')
    lib = prefix / lib_dir
    lib.mkdir(parents=True, exist_ok=True)
    (lib / f"libdnnl.so.{major}.{minor}").write_bytes(b"not a real library")
    (lib / f"libdnnl.so.{major}").symlink_to(f"libdnnl.so.{major}.{minor}")
    (lib / "libdnnl.so").symlink_to(f"libdnnl.so.{major}")
    return prefix


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """An empty Python environment, system and home, each a folder under tmp_path; the
    backend's oneDNN set-up pointed at them (and its one warning not yet given)."""
    env, system, home = tmp_path / "env", tmp_path / "usr", tmp_path / "home"
    for d in (env, system, home):
        d.mkdir()
    monkeypatch.setattr(sys, "prefix", str(env))
    monkeypatch.setattr(onednn.site, "getuserbase", lambda: str(env))
    monkeypatch.setattr(onednn, "_SYSTEM",
                        [("system", str(system / "include"), [str(system / "lib/x86_64-linux-gnu")])])
    monkeypatch.delenv(onednn.ENV, raising=False)
    monkeypatch.setenv("use_mkl", "1")
    monkeypatch.setattr(backend, "_jittor_home", lambda: str(home))
    monkeypatch.setattr(backend, "_warned", [])
    monkeypatch.setattr(backend, "info", {})
    monkeypatch.setattr(onednn, "preload", lambda dnnl: None)   # the fake libraries do not load
    return env, system, home


def _jittor_links(home: Path):
    folder = Path(onednn.jittor_folder(str(home)))
    return os.readlink(folder / "include"), os.readlink(folder / "lib" / "libmkldnn.so")


def _onednn_warnings(record) -> list:
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


def test_the_version_is_read_from_the_headers(tmp_path):
    assert onednn.version(str(_fake_onednn(tmp_path / "a", "2.6.0") / "include")) == (2, 6, 0)
    assert onednn.version(str(_fake_onednn(tmp_path / "b", "3.2.1") / "include")) == (3, 2, 1)
    assert onednn.version(str(tmp_path)) is None


@pytest.mark.skipif(not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
                    reason="PyPI's oneDNN 2 is for x86-64 Linux")
def test_this_environment_has_pypis_onednn_2():
    found, _ = onednn.find()
    assert found is not None and found.source == "environment", found
    assert found.version[0] == 2 and found.lib == os.path.join(sys.prefix, "lib", "libdnnl.so.2")


def test_the_environments_onednn_2_is_chosen_over_a_system_onednn_3(machine):
    env, system, _ = machine
    _fake_onednn(env, "2.6.0")
    _fake_onednn(system, "3.2.0", "lib/x86_64-linux-gnu")
    found, rejected = onednn.find()
    assert (found.source, found.version, found.lib) == ("environment", (2, 6, 0), str(env / "lib/libdnnl.so.2"))


def test_a_system_onednn_2_is_the_second_choice(machine):
    _, system, _ = machine
    _fake_onednn(system, "2.6.3", "lib/x86_64-linux-gnu")
    found, _ = onednn.find()
    assert (found.source, found.version) == ("system", (2, 6, 3))


def test_a_link_to_a_system_onednn_3_from_an_earlier_run_is_replaced(machine):
    env, system, home = machine
    _fake_onednn(env, "2.6.0")
    _fake_onednn(system, "3.2.0", "lib/x86_64-linux-gnu")
    folder = Path(onednn.jittor_folder(str(home)))
    (folder / "lib").mkdir(parents=True)
    (folder / "include").symlink_to(system / "include")       # what an earlier dfd_kit left
    (folder / "lib" / "libmkldnn.so").symlink_to(system / "lib/x86_64-linux-gnu/libdnnl.so")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        chosen = backend._set_up_onednn()
    assert _onednn_warnings(record) == []
    assert chosen.source == "environment" and os.environ["use_mkl"] == "1"
    assert _jittor_links(home) == (str(env / "include"), str(env / "lib/libdnnl.so.2"))


def test_jittors_own_download_is_kept(machine):
    env, _, home = machine
    _fake_onednn(env, "2.6.0")
    folder = Path(onednn.jittor_folder(str(home)))
    _fake_onednn(folder, "2.2.0")   # real files, as Jittor unpacks its download
    (folder / "lib" / "libmkldnn.so").write_bytes(b"Jittor's library")
    chosen = backend._set_up_onednn()
    assert (chosen.source, chosen.version) == ("Jittor's download", (2, 2, 0))
    assert not (folder / "include").is_symlink() and not (folder / "lib" / "libmkldnn.so").is_symlink()


def test_only_a_onednn_3_turns_onednn_off_with_one_warning(machine):
    _, system, _ = machine
    _fake_onednn(system, "3.2.0", "lib/x86_64-linux-gnu")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert backend._set_up_onednn() is None
        backend._without_onednn("a second reason")   # e.g. a later failure: no second warning
    [message] = _onednn_warnings(record)
    assert os.environ["use_mkl"] == "0"
    for said in ("oneDNN 3.2.0", "60x slower", onednn.PIP_PACKAGES if os.uname().machine == "x86_64" else "oneDNN 2.x"):
        assert said in message, message


def test_a_read_only_home_warns_once_and_keeps_a_usable_link(machine, monkeypatch):
    env, system, home = machine
    _fake_onednn(env, "2.6.0")
    old = _fake_onednn(home / "elsewhere", "2.6.3")   # linked by an earlier run, still usable
    onednn.link(onednn.OneDNN("before", str(old / "include"), str(old / "lib/libdnnl.so.2"), (2, 6, 3)), str(home))

    def read_only(*args):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(onednn, "link", read_only)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        chosen = backend._set_up_onednn()
    [message] = _onednn_warnings(record)
    assert "Read-only file system" in message and "linked there before" in message
    assert chosen.version == (2, 6, 3) and os.environ["use_mkl"] == "1"


def test_a_read_only_home_without_a_usable_link_turns_onednn_off_with_one_warning(machine, monkeypatch):
    env, _, _ = machine
    _fake_onednn(env, "2.6.0")
    monkeypatch.setattr(onednn, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert backend._set_up_onednn() is None
    [message] = _onednn_warnings(record)
    assert "Read-only file system" in message and "60x slower" in message
    assert os.environ["use_mkl"] == "0"


def test_jittors_onednn_operators_failing_to_compile_turn_onednn_off(machine):
    def compile_custom_ops(filenames, extra_flags=""):
        raise RuntimeError("[e] compile failed: error: 'desc' is not a member of 'dnnl::convolution_forward'")

    guarded = backend._tolerate_failed_onednn_ops(compile_custom_ops)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert guarded(["/jittor/extern/mkl/ops/mkl_conv_op.cc"]) is None
    [message] = _onednn_warnings(record)
    assert "did not compile" in message and "is not a member" in message
    assert os.environ["use_mkl"] == "0"
    with pytest.raises(RuntimeError):   # other custom operators fail as before
        guarded(["/elsewhere/my_op.cc"])


def test_the_fused_kernels_keep_to_the_plain_path_where_their_onednn_kernel_does_not_compile(monkeypatch):
    import jittor as jt

    from dfd_kit.fast import kernels

    monkeypatch.setattr(backend, "_warned", [])
    monkeypatch.setattr(kernels, "_ONEDNN_KERNELS", [])
    with jt.no_grad():
        if not kernels.channels_last():   # this machine's own answer, found by compiling the kernel
            pytest.skip("no oneDNN here: the channels-last kernels are off already")
        monkeypatch.setattr(kernels, "_ONEDNN_KERNELS", [])

        def fails(x, w):
            raise RuntimeError("[f] Run cmd failed: \"/usr/bin/g++\" \"/cache/jit/code__dnnl.cc\" -c")

        monkeypatch.setattr(kernels, "conv_nhwc", fails)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert kernels.channels_last() is False
            assert kernels.channels_last() is False
    [message] = _onednn_warnings(record)
    assert "channels-last oneDNN kernels did not compile" in message and "code__dnnl.cc" in message


def _link_repeatedly(home: str, targets, rounds: int, errors):
    try:
        for i in range(rounds):
            onednn.link(targets[i % len(targets)], home)
    except Exception as e:   # noqa: BLE001 - reported to the test
        errors.put(repr(e))


def _watch(home: str, stop, missing):
    folder = Path(onednn.jittor_folder(home))
    while not stop.is_set():
        for p in (folder / "include", folder / "lib" / "libmkldnn.so"):
            if (folder / "lib").is_dir() and not os.path.lexists(p):
                missing.put(str(p))


def test_processes_linking_at_once_never_fail_nor_leave_a_link_missing(tmp_path):
    """mpirun ranks import dfd_kit together: each replaces Jittor's links in one step."""
    a, b = _fake_onednn(tmp_path / "a", "2.6.0"), _fake_onednn(tmp_path / "b", "2.6.3")
    targets = [onednn.OneDNN("a", str(a / "include"), str(a / "lib/libdnnl.so.2"), (2, 6, 0)),
               onednn.OneDNN("b", str(b / "include"), str(b / "lib/libdnnl.so.2"), (2, 6, 3))]
    home = str(tmp_path / "home")
    ctx = multiprocessing.get_context("fork")
    errors, missing, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    onednn.link(targets[0], home)
    watcher = ctx.Process(target=_watch, args=(home, stop, missing))
    watcher.start()
    writers = [ctx.Process(target=_link_repeatedly, args=(home, targets[i % 2:] + targets[:i % 2], 300, errors))
               for i in range(6)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(120)
    stop.set()
    watcher.join(30)
    assert errors.empty(), errors.get()
    assert missing.empty(), f"{missing.get()} was missing for a moment"
    assert _jittor_links(Path(home))[0] in (targets[0].include, targets[1].include)
    folder = onednn.jittor_folder(home)   # no temporary link left behind
    assert sorted(os.listdir(folder)) == ["include", "lib"]
    assert os.listdir(os.path.join(folder, "lib")) == ["libmkldnn.so"]


# --- the demo model in the oneDNN-3 simulation ---------------------------------------------

GENERATE = """
import sys
import dfd_kit
print("ONEDNN", dfd_kit.backend.info["onednn"], flush=True)
image = dfd_kit.load(sys.argv[2]).generate(sys.argv[1], sex="male").image
print("IMAGE", image.shape, round(float(image.std()), 1))
print("LOADED", sorted({l.split()[-1] for l in open("/proc/self/maps") if "libdnnl" in l}))
"""


def _can_simulate() -> bool:
    if os.geteuid() != 0 or not os.path.isfile("/usr/include/dnnl.hpp"):
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


def _in_simulation(*flags) -> subprocess.CompletedProcess:
    """The demo (cartoon) model on one example sketch, under scripts/onednn3_sim.sh *flags*: one HOME
    and one pinned Jittor cache for every run (compiled once)."""
    env = {k: v for k, v in os.environ.items() if k not in ("use_mkl", onednn.ENV, "JITTOR_HOME")}
    env.update(ONEDNN3_SIM_HOME=str(SIM / "home"), DFD_KIT_JITTOR_CACHE=str(SIM / "jittor-cache"),
               ONEDNN3_SIM_PREFIX=sys.prefix, PYTHONPATH=str(ROOT))
    sketch, params = ROOT / "examples" / "sketches" / "face1_male.png", ROOT / "Params" / "demo"
    return subprocess.run(["nice", "-n", "19", str(ROOT / "scripts" / "onednn3_sim.sh"), *flags,
                           sys.executable, "-c", GENERATE, str(sketch), str(params)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)


needs_simulation = pytest.mark.skipif(not _can_simulate(), reason="needs root, unshare --mount and a system "
                                      "oneDNN to cover (scripts/onednn3_sim.sh)")


@pytest.mark.onednn_sim
@needs_simulation
def test_with_a_system_onednn_3_the_environments_onednn_2_runs_the_demo():
    # what dfd_kit linked on this machine before: the system oneDNN, which is 3.2 in the simulation
    folder = Path(onednn.jittor_folder(str(SIM / "home")))
    (folder / "lib").mkdir(parents=True, exist_ok=True)
    for link, target in ((folder / "include", "/usr/include"),
                         (folder / "lib" / "libmkldnn.so", "/usr/lib/x86_64-linux-gnu/libdnnl.so")):
        if os.path.lexists(link):
            link.unlink()
        link.symlink_to(target)
    out = _in_simulation()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OneDNNWarning" not in out.stderr, out.stderr[-3000:]
    assert f"ONEDNN oneDNN 2.6.0 (environment: {sys.prefix}/include)" in out.stdout
    assert f"LOADED ['{sys.prefix}/lib/libdnnl.so.2']" in out.stdout, out.stdout
    assert "IMAGE (256, 256, 3)" in out.stdout


@pytest.mark.onednn_sim
@needs_simulation
def test_with_no_onednn_2_anywhere_one_warning_and_the_demo_still_runs():
    out = _in_simulation("--env-too")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("OneDNNWarning") == 1, out.stderr[-3000:]
    assert "oneDNN 3.2.0" in out.stderr and "60x slower" in out.stderr and onednn.PIP_PACKAGES in out.stderr
    assert "ONEDNN False" in out.stdout and "LOADED []" in out.stdout
    assert "IMAGE (256, 256, 3)" in out.stdout
