"""A demo-size generation with each oneDNN this machine has: the Python environment's (PyPI's
2.6.0, what dfd_kit takes first) against the system's (Debian 12's libdnnl 2.6.3), and with
``--without`` none at all (Jittor's own convolutions). Each variant runs in fresh processes,
interleaved round by round, so that a load which changes during the run (a training job)
touches every variant alike: compare the ratios.

    .venv/bin/python bench/bench_onednn.py [--rounds 6] [--repeats 5] [--without]

The system's oneDNN is handed to dfd_kit through ``DFD_KIT_ONEDNN`` (a folder linking its
headers and library); at the end Jittor's oneDNN folder is linked to the environment's again.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CODE = r"""
import json, sys, time
import dfd_kit
model = dfd_kit.load(sys.argv[1])
for _ in range(2):   # compile, warm up
    model.generate(sys.argv[2], sex="male")
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    model.generate(sys.argv[2], sex="male")
    times.append(time.perf_counter() - t)
libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if "libdnnl" in l})
print(json.dumps({"onednn": dfd_kit.backend.info["onednn"], "libs": libs, "times": times}))
"""


def system_prefix(folder: Path):
    """A folder for DFD_KIT_ONEDNN that links the system's oneDNN 2, or None without one."""
    from dfd_kit import onednn

    for source, include, libdirs in onednn._SYSTEM:
        found = onednn._check(source, include, [os.path.join(d, f"libdnnl.so.{onednn.MAJOR}") for d in libdirs])
        if isinstance(found, onednn.OneDNN):
            (folder / "lib").mkdir(parents=True)
            (folder / "include").symlink_to(found.include)
            (folder / "lib" / f"libdnnl.so.{onednn.MAJOR}").symlink_to(found.lib)
            return folder
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5, help="timed generations per process")
    ap.add_argument("--without", action="store_true", help="also time Jittor's own convolutions (slow)")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("use_mkl", "DFD_KIT_ONEDNN")}
    with tempfile.TemporaryDirectory() as tmp:
        variants = [("environment", {})]
        system = system_prefix(Path(tmp) / "system")
        if system is not None:
            variants.append(("system", {"DFD_KIT_ONEDNN": str(system)}))
        if args.without:
            variants.append(("none (use_mkl=0)", {"use_mkl": "0"}))
        times = {name: [] for name, _ in variants}
        for r in range(args.rounds):
            for name, extra in variants[r % len(variants):] + variants[:r % len(variants)]:
                out = subprocess.run([sys.executable, "-c", CODE, str(ROOT / "Params" / "demo"),
                                      str(ROOT / "examples" / "sketches" / "face1_male.png"), str(args.repeats)],
                                     env={**base, **extra}, cwd=ROOT, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{name}: {out.stderr[-2000:]}")
                got = json.loads(out.stdout.strip().splitlines()[-1])
                times[name] += got["times"]
                print(f"round {r} {name}: {got['onednn']} {got['libs']} "
                      f"median {statistics.median(got['times']):.3f} s", flush=True)
    from dfd_kit import backend, onednn   # Jittor's folder back to what a plain import links

    found, _ = onednn.find()
    if found is not None:
        onednn.link(found, backend._jittor_home())
    ref = statistics.median(times["environment"])
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.3f} s over {len(ts)} generations, "
              f"{statistics.median(ts) / ref:.2f} x the environment's")


if __name__ == "__main__":
    main()
