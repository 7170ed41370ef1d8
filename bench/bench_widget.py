"""Benchmark the drawing widget: time from the end of a stroke to the updated face.

    python bench/bench_widget.py [--demo DIR] [--full DIR] [--strokes 12] [--no-full]

The drawing pad (:class:`dfd_kit.widgets.DrawingPad`) runs without a browser here: a
stroke is added as the mouse-up handler adds it, and the pad's own clock measures from
the stroke's end to the face being on screen (re-encode the touched parts, re-project,
feature-decode the changed parts, synthesis, PNG). The shadow guidance is updated after
the face, so it is reported separately.

Each model runs twice, with the lens closed (the plain pad) and open (the stage inspector
and the manifold map, :mod:`dfd_kit.inspector`): the lens refreshes after the face and the
shadows, and its cost is the median over strokes of its two panels' refresh times (target:
at most 0.2 s more), the map's drawing and the PNG sent to the browser included. The
difference of the two "everything" medians is printed too, but the open run reuses the
neighbour sketches the closed run decoded (the model's row cache), so it understates the cost.

Models: the bundled default model (``dfd_kit.load()``, the photo model; target 0.5 s; printed
as "demo") and the official-size stand-in
weights (``.cache/standin_params``, written when missing; target 4 s). The strokes visit
the parts in turn (mouth, left eye, nose, right eye, a line outside the boxes), so every
kind of incremental update is in the median. One warm-up stroke in each box comes first:
Jittor compiles its kernels for new shapes once, and the manifold map draws each bank in
full the first time it shows it (then only the marks move).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dfd_kit  # noqa: E402  (configures Jittor before it is imported)

STANDIN = ROOT / ".cache" / "standin_params"
TARGETS = {"demo": 0.5, "full size": 4.0}


def stroke_in(box, size, i):
    """A short wavy stroke inside ``box`` (or below the boxes when box is None)."""
    if box is None:
        y = size * 0.93
        return [(size * (0.2 + 0.05 * (i % 3)), y), (size * 0.5, y + 2), (size * 0.75, y)]
    x, y, s = box.x, box.y, box.size
    j = 0.05 * (i % 3)
    return [(x + s * (0.25 + j), y + s * 0.5), (x + s * 0.5, y + s * (0.55 + j)), (x + s * 0.75, y + s * 0.5)]


def bench(name, model, n_strokes, sketch, lens=False):
    from dfd_kit.widgets import DrawingPad

    t = time.perf_counter()
    pad = DrawingPad(model=model, shadows=True)
    pad.load_sketch(sketch)
    pad.inspect_toggle.value = pad.map_toggle.value = lens
    if lens:   # as a browser view does when it appears: from now on the map draws in the kernel
        pad.manifold_map.canvas.syncing_data_url = False
    first = time.perf_counter() - t
    lay = model.layout
    plan = [lay.box("mouth"), lay.box("left_eye"), lay.box("nose"), lay.box("right_eye"), None]
    face, shadow, parts, total, panels = [], [], [], [], []
    warm = len(plan)   # one stroke in every box first: new kernel shapes, each bank's first map
    for i in range(n_strokes + warm):
        box = plan[i % len(plan)]
        t = time.perf_counter()
        pad.add_stroke(stroke_in(box, lay.size, i), width=2)
        wall = time.perf_counter() - t
        if pad.error:
            raise SystemExit(f"{name}: {pad.error}")
        if i >= warm:
            face.append(pad.latency)
            shadow.append(pad.shadow_latency or 0.0)
            parts.append(dict(pad.timings))
            total.append(wall)
            if lens:
                panels.append((pad.inspector.latency, pad.manifold_map.latency))
    med = statistics.median(face)
    stage = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    print(f"\n{name}, lens {'open' if lens else 'closed'}: {model!r}")
    print(f"  first face (load sketch, every part): {first:.2f} s")
    print(f"  stroke end -> updated face, median of {len(face)} strokes: {med:.3f} s "
          f"(min {min(face):.3f}, max {max(face):.3f}); target {TARGETS[name]} s: "
          f"{'met' if med <= TARGETS[name] else 'NOT met'}")
    print("  of which: " + ", ".join(f"{k} {v:.3f} s" for k, v in stage.items()))
    print(f"  shadow guidance after the face: median {statistics.median(shadow):.3f} s")
    print(f"  feature decoders run: {dict(pad.stats['feature_decoded'])} for {pad.stats['generated']} updates")
    if lens:
        print(f"  panels after the face: inspector median {statistics.median(p[0] for p in panels):.3f} s, "
              f"manifold map {statistics.median(p[1] for p in panels):.3f} s")
    print(f"  everything (face, shadows{', panels' if lens else ''}), median: {statistics.median(total):.3f} s")
    return statistics.median(total), (statistics.median(a + b for a, b in panels) if lens else 0.0)


def bench_both(name, model, n_strokes, sketch):
    closed, _ = bench(name, model, n_strokes, sketch, lens=False)
    opened, lens = bench(name, model, n_strokes, sketch, lens=True)
    print(f"  => {name}: the open lens adds {lens:.3f} s a stroke, its panels' median (target at most 0.2 s: "
          f"{'met' if lens <= 0.2 else 'NOT met'}); difference of the two runs: {opened - closed:+.3f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default=None, help="demo model folder (default: Params/demo)")
    ap.add_argument("--full", default=str(STANDIN), help="official-size Params (default: the stand-in weights)")
    ap.add_argument("--strokes", type=int, default=12)
    ap.add_argument("--no-full", action="store_true", help="only the demo model")
    a = ap.parse_args(argv)
    sketch = ROOT / "tests" / "fixtures" / "official_parity" / "inputs" / "sketch_0.png"
    bench_both("demo", dfd_kit.load(a.demo), a.strokes, sketch)
    if not a.no_full:
        if not (Path(a.full) / "Combine").is_dir():
            from dfd_kit.standin import write_standin_params

            print(f"writing the stand-in weights to {a.full} (once, ~20 s)")
            write_standin_params(a.full)
        bench_both("full size", dfd_kit.load(a.full), a.strokes, sketch)
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
