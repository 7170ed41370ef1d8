"""Benchmark the drawing widget: time from the end of a stroke to the updated face.

    python bench/bench_widget.py [--demo DIR] [--full DIR] [--strokes 12] [--no-full]

The drawing pad (:class:`dfd_kit.widgets.DrawingPad`) runs without a browser here: a
stroke is added as the mouse-up handler adds it, and the pad's own clock measures from
the stroke's end to the face being on screen (re-encode the touched parts, re-project,
feature-decode the changed parts, synthesis, PNG). The shadow guidance is updated after
the face, so it is reported separately.

Models: the demo model (``Params/demo``; target 0.5 s) and the official-size stand-in
weights (``.cache/standin_params``, written when missing; target 4 s). The strokes visit
the parts in turn (mouth, left eye, nose, right eye, a line outside the boxes), so every
kind of incremental update is in the median. Two warm-up strokes come first: Jittor
compiles its kernels for new shapes once.
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


def bench(name, model, n_strokes, sketch):
    from dfd_kit.widgets import DrawingPad

    t = time.perf_counter()
    pad = DrawingPad(model=model, shadows=True)
    pad.load_sketch(sketch)
    first = time.perf_counter() - t
    lay = model.layout
    plan = [lay.box("mouth"), lay.box("left_eye"), lay.box("nose"), lay.box("right_eye"), None]
    face, shadow, parts = [], [], []
    for i in range(n_strokes + 2):
        box = plan[i % len(plan)]
        pad.add_stroke(stroke_in(box, lay.size, i), width=2)
        if pad.error:
            raise SystemExit(f"{name}: {pad.error}")
        if i >= 2:   # after the warm-up strokes
            face.append(pad.latency)
            shadow.append(pad.shadow_latency or 0.0)
            parts.append(dict(pad.timings))
    med = statistics.median(face)
    stage = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    print(f"\n{name}: {model!r}")
    print(f"  first face (load sketch, every part): {first:.2f} s")
    print(f"  stroke end -> updated face, median of {len(face)} strokes: {med:.3f} s "
          f"(min {min(face):.3f}, max {max(face):.3f}); target {TARGETS[name]} s: "
          f"{'met' if med <= TARGETS[name] else 'NOT met'}")
    print("  of which: " + ", ".join(f"{k} {v:.3f} s" for k, v in stage.items()))
    print(f"  shadow guidance after the face: median {statistics.median(shadow):.3f} s")
    print(f"  feature decoders run: {dict(pad.stats['feature_decoded'])} for {pad.stats['generated']} updates")
    return med


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default=None, help="demo model folder (default: Params/demo)")
    ap.add_argument("--full", default=str(STANDIN), help="official-size Params (default: the stand-in weights)")
    ap.add_argument("--strokes", type=int, default=12)
    ap.add_argument("--no-full", action="store_true", help="only the demo model")
    a = ap.parse_args(argv)
    sketch = ROOT / "tests" / "fixtures" / "official_parity" / "inputs" / "sketch_0.png"
    bench("demo", dfd_kit.load(a.demo), a.strokes, sketch)
    if not a.no_full:
        if not (Path(a.full) / "Combine").is_dir():
            from dfd_kit.standin import write_standin_params

            print(f"writing the stand-in weights to {a.full} (once, ~20 s)")
            write_standin_params(a.full)
        bench("full size", dfd_kit.load(a.full), a.strokes, sketch)
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
