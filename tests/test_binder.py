"""Binder's first import is fast: the Jittor cache compiled in the image's postBuild is found
and used by a session on another host, with another CPU model name, under a 2 GB memory cap.

The simulation (bench/binder_sim.py) compiles a pinned cache once into .cache/binder_sim
(about 12 min on 2 cores; kept for later runs), then runs the session's first cell under
``unshare --uts --mount`` with another host name and a bind-mounted /proc/cpuinfo.
bench/bench_binder_import.py reports the same steps with times and peak memory.
"""
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import binder_sim as sim  # noqa: E402

# DFD_BINDER_SIM_HOME reuses a folder built before (e.g. by bench/bench_binder_import.py --home).
HOME = Path(os.environ.get("DFD_BINDER_SIM_HOME", ROOT / ".cache" / "binder_sim"))
IMPORT_BUDGET_S = 30


def _pinned_value(path: Path) -> str:
    m = re.search(r'^export DFD_KIT_JITTOR_CACHE=(.+)$', path.read_text(), re.M)
    assert m, f"{path} does not set DFD_KIT_JITTOR_CACHE"
    return m.group(1)


def test_postbuild_and_start_pin_the_same_jittor_cache():
    assert _pinned_value(ROOT / "binder" / "postBuild") == _pinned_value(ROOT / "binder" / "start")


def test_binder_start_runs_the_server_it_is_given():
    assert re.search(r'^exec "\$@"$', (ROOT / "binder" / "start").read_text(), re.M)


@pytest.fixture(scope="module")
def built_home():
    """A HOME whose pinned cache holds Jittor's core and a demo generation's kernels."""
    HOME.mkdir(parents=True, exist_ok=True)
    res = sim.run_capped([sys.executable, "-c", sim.BUILD_CODE], sim.environment(HOME))
    assert res["rc"] == 0 and not res["oom_killed"], res["output"][-3000:]
    return HOME


@pytest.fixture(scope="module")
def session(built_home):
    """The session's first cell (import, then a generation) on another host and CPU, capped at 2 GB."""
    if not sim.can_unshare():
        pytest.skip("unshare --uts --mount is not permitted here (needs root or user namespaces)")
    cache = built_home / "jittor-cache"
    before = sim.snapshot(cache)
    res = sim.run_capped(sim.session_command(sim.GENERATE_CODE, "binder-session", built_home),
                         sim.environment(built_home), limit=2 * sim.GB, timeout=600)
    res["recompiled"] = sim.recompiled(before, sim.snapshot(cache))
    return res


@pytest.mark.binder
def test_session_on_another_host_and_cpu_runs_within_2gb(session):
    assert session["rc"] == 0 and not session["oom_killed"], session["output"][-3000:]
    assert sim.value(session["output"], "GENERATE_S") is not None


@pytest.mark.binder
def test_session_on_another_host_and_cpu_compiles_nothing(session):
    assert session["recompiled"] == []


@pytest.mark.binder
def test_session_uses_the_pinned_cache(session, built_home):
    assert sim.value(session["output"], "CACHE").startswith(str(built_home / "jittor-cache"))


@pytest.mark.binder
def test_session_first_import_is_under_30_seconds(session):
    assert float(sim.value(session["output"], "IMPORT_S")) < IMPORT_BUDGET_S
