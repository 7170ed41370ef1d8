"""Two source trees of dfd_kit timed on the same full-size generation, in alternating fresh
processes: did a change make the kit slower? Figures from different days differ by more than
most changes do (another machine, another load), so compare in one run.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/bench_ab.py --before /tmp/before [--after .] [--precision fp32] [--rounds 3]

Each child imports dfd_kit from its tree, loads the full-size Params (the stand-in of this
checkout unless ``--params``), generates once (compiling), then reports the median of 5
generations without shadows and of 3 with them, on the parity fixture's ``sketch_0.png``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, sys, time
tree, params, precision = sys.argv[1:4]
sys.path.insert(0, tree)
import dfd_kit
model = dfd_kit.load(params, precision=precision)
sketch = tree + "/tests/fixtures/official_parity/inputs/sketch_0.png"
model.generate(sketch, sex="male", keep_features=False)
def median_time(shadows, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        model.generate(sketch, sex="male", shadows=shadows, keep_features=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)
print("RESULT", json.dumps([median_time(False, 5), median_time(True, 3), dfd_kit.__file__]))
"""


def child(tree: Path, params: Path, precision: str):
    """(median s without shadows, with shadows, the dfd_kit file imported) in a fresh process."""
    from bench_precision import run   # the benchmarks' child runner: RESULT line, errors shown

    return run(["-c", CHILD, str(tree), str(params), precision], None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the tree to compare with (e.g. a git worktree)")
    ap.add_argument("--after", default=str(ROOT), help="the tree with the change (default: this one)")
    ap.add_argument("--params", default=None, help="full-size Params (default: this checkout's stand-in)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from dfd_kit.standin import full_size_params

    params = full_size_params(a.params)
    trees = {"before": Path(a.before).resolve(), "after": Path(a.after).resolve()}
    runs = {name: [] for name in trees}
    for r in range(a.rounds):
        for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):   # neither always goes first
            no_shadows, shadows, where = child(trees[name], params, a.precision)
            assert Path(where).resolve().is_relative_to(trees[name]), f"{name} imported {where}"
            runs[name].append((no_shadows, shadows))
            print(f"round {r + 1} {name:6}: no shadows {no_shadows:.3f} s, shadows {shadows:.3f} s", flush=True)
    print()
    for name, times in runs.items():
        print(f"{a.precision} {name:6}: median no shadows {statistics.median(t[0] for t in times):.3f} s, "
              f"shadows {statistics.median(t[1] for t in times):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
