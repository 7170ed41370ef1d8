"""Binder's first import, simulated: build the pinned Jittor cache as the image's postBuild
does, then import dfd_kit and generate in a "session" under another host name and CPU model
name, each step with memory capped at 2 GB.

    python bench/bench_binder_import.py [--home DIR] [--keep] [--limit-gb 2] [--json FILE]

--home reuses a folder whose cache is already built (the build is then timed warm);
without it a fresh temporary folder is built from nothing (about 11 min on 2 cores).
Prints, for the build, the session's first import and the session's first generation:
wall time, peak memory (the cgroup's, page cache included, and the process tree's
resident memory, sampled every 0.2 s), and how many compiled files were new or changed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import binder_sim as sim  # noqa: E402

ROWS = []


def report(step: str, res: dict, recompiled: list):
    mb = lambda b: "-" if b is None else f"{b / 2**20:.0f} MB"
    row = dict(step=step, rc=res["rc"], wall_s=round(res["wall_s"], 1),
               import_s=None if sim.value(res["output"], "IMPORT_S") is None
               else round(float(sim.value(res["output"], "IMPORT_S")), 2),
               peak_cgroup_mb=None if res["peak_cgroup"] is None else round(res["peak_cgroup"] / 2**20),
               peak_rss_mb=round(res["peak_rss"] / 2**20), recompiled=len(recompiled),
               oom_killed=res["oom_killed"])
    ROWS.append(row)
    imp = row["import_s"]
    print(f"{step:<26} rc={res['rc']}  wall {res['wall_s']:6.1f} s"
          f"{'' if imp is None else f'  (import {float(imp):.1f} s)'}"
          f"  peak cgroup {mb(res['peak_cgroup'])}  peak RSS {mb(res['peak_rss'])}"
          f"  recompiled {len(recompiled)}{'  OOM-KILLED' if res['oom_killed'] else ''}", flush=True)
    if res["rc"] != 0:
        print(res["output"][-3000:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="reuse this folder (HOME and pinned cache)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--limit-gb", type=float, default=2.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not sim.can_unshare():
        sys.exit("unshare --uts --mount is not permitted here (needs root or user namespaces)")
    home = args.home or sim.fresh_home()
    home.mkdir(parents=True, exist_ok=True)
    env, cache, limit = sim.environment(home), home / "jittor-cache", int(args.limit_gb * sim.GB)
    print(f"HOME={home}  cache={cache}  cap={args.limit_gb:g} GB  "
          f"host={platform.node()}  cpus={os.cpu_count()}", flush=True)
    try:
        before = sim.snapshot(cache)
        build = sim.run_capped([sys.executable, "-c", sim.BUILD_CODE], env, limit)
        print(f"memory cap: {build['method']}")
        report("build (postBuild)", build, sim.recompiled(before, sim.snapshot(cache)))
        if build["rc"] != 0:
            sys.exit(1)
        for step, code in (("session: first import", sim.IMPORT_CODE),
                           ("session: import+generate", sim.GENERATE_CODE)):
            before = sim.snapshot(cache)
            res = sim.run_capped(sim.session_command(code, "binder-session", home), env, limit)
            report(step, res, sim.recompiled(before, sim.snapshot(cache)))
            print(f"    {sim.value(res['output'], 'CACHE')}  {sim.value(res['output'], 'GENERATE_S') or ''}")
        if args.json:
            args.json.write_text(json.dumps(dict(host=platform.node(), cpus=os.cpu_count(),
                                                 limit_gb=args.limit_gb, method=build["method"],
                                                 rows=ROWS), indent=1))
    finally:
        if not args.home and not args.keep:
            sim.remove_home(home)
        elif not args.home:
            print(f"kept {home}")


if __name__ == "__main__":
    main()
