"""Peak memory and load time of the full-size model, each figure from a fresh process.

    python bench/bench_memory.py [--params DIR] [--keep-cache] [--precision auto|fp32|bf16] [--json FILE]

Runs, each in its own child process (so that every peak is that scenario's alone):

1. first load: the compact cache is deleted first, so this load converts the pickles;
2. load from the compact cache, then one generation without shadows;
3. load from the compact cache, then one generation with shadows (sketch decoders load
   on that first shadows request).

For each it prints the load time, the generation time and the child's peak resident set
size (``getrusage(RUSAGE_SELF).ru_maxrss`` read inside the child at its end: the kernel's
high-water mark of everything it held, file pages it mapped included). Generations use the
parity fixture's ``sketch_0.png``, sex "male", defaults otherwise; Jittor's compiled kernels
are assumed cached on disk (run bench_generate.py or the tests once first).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKETCH = ROOT / "tests" / "fixtures" / "official_parity" / "inputs" / "sketch_0.png"
SCENARIOS = {"first load": None, "load + generate, no shadows": False, "load + generate, shadows": True}


def child(params: str, shadows, precision: str = "auto") -> dict:
    """One scenario in this process; shadows None: load only."""
    sys.path.insert(0, str(ROOT))
    import dfd_kit

    t0 = time.perf_counter()
    model = dfd_kit.load(params, precision=precision)
    out = {"load_s": time.perf_counter() - t0, "precision": model.precision}
    if shadows is not None:
        t0 = time.perf_counter()
        r = model.generate(str(SKETCH), sex="male", shadows=shadows)
        out["generate_s"] = time.perf_counter() - t0
        out["shadows"] = r.shadow is not None
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def run_child(params: Path, scenario: str, precision: str = "auto") -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_memory as b; "
            f"print('RESULT', json.dumps(b.child({str(params)!r}, {SCENARIOS[scenario]!r}, {precision!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{scenario} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=None, help="full-size Params (default: the stand-in, written if missing)")
    ap.add_argument("--keep-cache", action="store_true", help="do not delete the compact cache first")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="load(precision=...); the first load of bf16 also converts its weights")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from dfd_kit.loading import compact_cache_dir

    from dfd_kit.standin import full_size_params

    params = full_size_params(args.params)
    if not args.keep_cache:
        shutil.rmtree(compact_cache_dir(params), ignore_errors=True)
    results = {}
    for scenario in SCENARIOS:
        results[scenario] = r = run_child(params, scenario, args.precision)
        gen = f"generate {r['generate_s']:6.1f} s" if "generate_s" in r else " " * 17
        print(f"{scenario:30s} {r['precision']}  load {r['load_s']:5.1f} s   {gen}   "
              f"peak RSS {r['peak_rss_bytes'] / 2**30:5.2f} GiB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
