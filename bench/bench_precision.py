"""bfloat16 against float32 for the full-size model, on this CPU and on a simulated older one,
and the reference path (``dfd_kit.load(..., fast=False)``: plain Jittor, no dfd_kit.fast) beside them.

    python bench/bench_precision.py [--params DIR] [--repeats 3] [--strokes 8] [--rounds 2]
                                    [--isa native,AVX2] [--official DIR] [--json FILE]

Each measurement runs in a fresh child process, so that each has its own peak memory and
oneDNN reads its instruction-set cap at start: for every CPU setting (``native``: this CPU;
``AVX2``: oneDNN capped with ``ONEDNN_MAX_CPU_ISA=AVX2``, as on a CPU without AVX-512 or
bf16; Jittor's and dfd_kit's own kernels keep this CPU's instructions) and precision
(``fp32``, ``bf16``; ``reference``: float32 on the reference path), interleaved round by round so that a load that changes during the run
touches both alike, it reports

* generation without shadows and with shadows (median of ``--repeats`` warm runs, after one
  that compiles), on the parity fixture's ``sketch_0.png``, sex "male", defaults otherwise;
* the drawing pad's stroke end to updated face (median of ``--strokes`` strokes that visit
  every part, after two warm-up strokes; bench_widget.py's strokes);
* the precision the model actually ran in (``bf16`` where oneDNN has no bf16 kernels falls
  back to float32 with one warning) and the child's peak RSS;
* the PSNR of each bf16 image against the float32 image of the same CPU setting, on the
  three parity sketches (their recorded weights, sex and K; anchor "official") and the
  freehand sketches in examples/hand_drawn, and of the shadow guidance of ``sketch_0.png``
  (with its largest difference in grey levels).

``--official DIR``: also time the official DeepFaceDrawing code (an export of its
repository, with the two patches tests/fixtures/official_parity/README.md lists, so that it
runs under Jittor 1.3 and reads the stand-in's smaller banks) on the same sketch and Params,
``predict_shadow`` (which always draws the shadows), in a child process per CPU setting.
Without it, or where that folder holds no ``CombineModel_jt.py``, the report says that the
side-by-side figures are absent. The official code also imports OpenCV and SciPy, which the
kit does not install; put them where only its child finds them, e.g.

    git clone https://github.com/IGLICT/DeepFaceDrawing-Jittor /tmp/official   # then the patches
    .venv/bin/python -m pip install --no-deps --target /tmp/offdeps opencv-python-headless==4.10.0.84 scipy==1.13.1
    PYTHONPATH=/tmp/offdeps .venv/bin/python bench/bench_precision.py --official /tmp/official
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "official_parity"
SKETCH = FIXTURE / "inputs" / "sketch_0.png"
PRECISIONS = ("fp32", "bf16")
#: What a child runs: the fast path in either precision, or the reference path.
VARIANTS = PRECISIONS + ("reference",)
ISA_ENV = "ONEDNN_MAX_CPU_ISA"


# --------------------------------------------------------------------------- in the child

def psnr_jobs():
    """[(name, sketch path, generate() keywords)]: the parity cases, then the freehand sketches."""
    cases = json.loads((FIXTURE / "cases.json").read_text())["cases"]
    sys.path.insert(0, str(ROOT))
    from dfd_kit.config import COMPONENTS, OFFICIAL_NAMES

    jobs = [(f"parity case {c['id']}", str(FIXTURE / "inputs" / c["sketch"]),
             dict(part_weights={k: float(c["w"][OFFICIAL_NAMES[k]]) for k in COMPONENTS},
                  sex=("male", "female")[c["sex"]], k=c["K"], anchor="official")) for c in cases]
    for p in sorted((ROOT / "examples" / "hand_drawn").glob("*.png")):
        jobs.append((f"freehand {p.name}", str(p), dict(sex="female" if "female" in p.name else "male")))
    return jobs


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pad_strokes(model, strokes: int) -> float:
    """Median seconds from a stroke's end to the updated face in the drawing pad."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_widget import stroke_in

    from dfd_kit.widgets import DrawingPad

    pad = DrawingPad(model=model, shadows=True)
    pad.load_sketch(SKETCH)
    lay = model.layout
    plan = [lay.box("mouth"), lay.box("left_eye"), lay.box("nose"), lay.box("right_eye"), None]
    face = []
    for i in range(strokes + 2):
        pad.add_stroke(stroke_in(plan[i % len(plan)], lay.size, i), width=2)
        if pad.error:
            raise RuntimeError(f"the pad failed: {pad.error}")
        if i >= 2:   # after the warm-up strokes
            face.append(pad.latency)
    return statistics.median(face)


def child(params: str, precision: str, repeats: int, strokes: int, images: str) -> dict:
    """One variant (:data:`VARIANTS`) in this process: load, time, save the PSNR images to
    ``images`` (npz)."""
    import warnings

    import numpy as np

    sys.path.insert(0, str(ROOT))
    import dfd_kit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        if precision == "reference":
            model = dfd_kit.load(params, precision="fp32", fast=False)
        else:
            model = dfd_kit.load(params, precision=precision)
        load_s = time.perf_counter() - t
    out = {"asked": precision, "ran": model.precision, "load_s": load_s,
           "warnings": [str(w.message) for w in caught if "bfloat16" in str(w.message)]}
    sketch = str(SKETCH)
    t = time.perf_counter()
    first = model.generate(sketch, sex="male", shadows=True, keep_features=False)   # compiles
    out["first_s"] = time.perf_counter() - t
    out["no_shadows_s"] = median_time(lambda: model.generate(sketch, sex="male", shadows=False, keep_features=False),
                                      repeats)
    out["shadows_s"] = median_time(lambda: model.generate(sketch, sex="male", shadows=True, keep_features=False),
                                   repeats)
    out["peak_rss_generate_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    saved = {}
    for name, path, kw in psnr_jobs():
        saved[name] = model.generate(path, shadows=False, keep_features=False, **kw).image
    np.savez(images, shadow=first.shadow, **saved)
    out["stroke_s"] = pad_strokes(model, strokes) if strokes else None
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


_OFFICIAL_CHILD = r"""
import json, os, statistics, sys, time
import numpy as np
from PIL import Image
official, params, sketch, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
os.chdir(official)                      # its heat masks are read relative to the repository
sys.path.insert(0, official)
sys.argv = [sys.argv[0], "--param", params]   # its option parsers read the command line
from CombineModel_jt import CombineModel
model = CombineModel()
model.sex = 0                           # male, as dfd_kit's timings
gray = np.asarray(Image.open(sketch).convert("L"))
rgb = np.repeat(gray[:, :, None], 3, axis=2)
t = time.perf_counter(); model.predict_shadow(rgb); first = time.perf_counter() - t
times = []
for _ in range(repeats):
    t = time.perf_counter(); model.predict_shadow(rgb); times.append(time.perf_counter() - t)
print("RESULT", json.dumps({"first_s": first, "shadows_s": statistics.median(times)}))
"""


# --------------------------------------------------------------------------- the parent

def run(code_args, env_isa, timeout=3600) -> dict:
    env = dict(os.environ)
    env.pop(ISA_ENV, None)
    env.pop("DNNL_MAX_CPU_ISA", None)
    if env_isa:
        env[ISA_ENV] = env_isa
    proc = subprocess.run([sys.executable, *code_args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child failed ({env_isa or 'native'}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def run_precision(params, precision, isa, repeats, strokes, images) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_precision as b; "
            f"print('RESULT', json.dumps(b.child({str(params)!r}, {precision!r}, {repeats}, {strokes}, "
            f"{str(images)!r})))")
    return run(["-c", code], isa)


def official_present(folder) -> bool:
    return folder is not None and (Path(folder) / "CombineModel_jt.py").is_file()


def psnr(a, b) -> float:
    import numpy as np

    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=None, help="full-size Params (default: the stand-in, written if missing)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strokes", type=int, default=8, help="pad strokes to time (0: none)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each variant per CPU setting, order alternating")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"which of {', '.join(VARIANTS)}")
    ap.add_argument("--isa", default="native,AVX2", help="CPU settings: native and/or ONEDNN_MAX_CPU_ISA values")
    ap.add_argument("--official", default=None, help="an export of the official DeepFaceDrawing repository")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args(argv)
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from dfd_kit.standin import full_size_params

    params = full_size_params(a.params)
    from dfd_kit.fast.precision import BF16_CPU_FLAGS, cpu_flags

    variants = [v for v in VARIANTS if v in a.variants.split(",")]
    assert {"fp32", "bf16"} <= set(variants), "fp32 and bf16 are always measured (their ratio, their PSNR)"

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_start": os.getloadavg(),
               "bf16_flags": sorted(set(BF16_CPU_FLAGS) & cpu_flags())}
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, CPU bf16 flags {machine['bf16_flags'] or 'none'}, "
          f"load average {machine['load_avg_start'][0]:.1f}")
    report = {"machine": machine, "params": str(params), "settings": {}}
    tmp = Path(tempfile.mkdtemp(prefix="bench_precision-"))
    for isa in a.isa.split(","):
        env_isa = None if isa == "native" else isa
        runs = {p: [] for p in variants}
        for r in range(a.rounds):
            for p in (variants if r % 2 == 0 else variants[::-1]):
                images = tmp / f"{isa}-{p}-{r}.npz"
                res = run_precision(params, p, env_isa, a.repeats, a.strokes, images)
                res["images"] = str(images)
                runs[p].append(res)
                print(f"  [{isa}] round {r + 1} {p:9s} (ran {res['ran']}): no shadows {res['no_shadows_s']:.3f} s, "
                      f"shadows {res['shadows_s']:.3f} s, stroke {res['stroke_s'] or 0:.3f} s, "
                      f"peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
        summary = {}
        for p in variants:
            rs = runs[p]
            summary[p] = {k: statistics.median(x[k] for x in rs if x[k] is not None)
                          for k in ("no_shadows_s", "shadows_s", "stroke_s", "load_s")
                          if any(x[k] is not None for x in rs)}
            summary[p]["ran"] = sorted({x["ran"] for x in rs})
            summary[p]["warnings"] = sorted({w for x in rs for w in x["warnings"]})
            summary[p]["peak_rss_gib"] = max(x["peak_rss_bytes"] for x in rs) / 2**30
            summary[p]["peak_rss_generate_gib"] = max(x["peak_rss_generate_bytes"] for x in rs) / 2**30
        want, got = np.load(runs["fp32"][0]["images"]), np.load(runs["bf16"][0]["images"])
        summary["psnr_db"] = {name: psnr(got[name], want[name]) for name in want.files if name != "shadow"}
        summary["shadow_max_diff"] = int(np.abs(got["shadow"].astype(int) - want["shadow"]).max())
        summary["shadow_psnr_db"] = psnr(got["shadow"], want["shadow"])
        if "reference" in runs:   # the two float32 paths: the same faces up to float rounding
            ref = np.load(runs["reference"][0]["images"])
            summary["reference_psnr_db"] = {name: psnr(want[name], ref[name]) for name in want.files if name != "shadow"}
            summary["reference_shadow_max_diff"] = int(np.abs(ref["shadow"].astype(int) - want["shadow"]).max())
        if official_present(a.official):
            off = run(["-c", _OFFICIAL_CHILD, str(Path(a.official).resolve()), str(params), str(SKETCH),
                       str(a.repeats)], env_isa)
            summary["official"] = off
        report["settings"][isa] = {"summary": summary, "runs": runs}
        print_setting(isa, summary, a.official)
    machine["load_avg_end"] = os.getloadavg()
    print(f"\nload average at the end: {machine['load_avg_end'][0]:.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


def print_setting(isa: str, s: dict, official) -> None:
    f, b = s["fp32"], s["bf16"]
    print(f"\n== {isa} (oneDNN {'capped at ' + isa if isa != 'native' else 'as this CPU allows'}) ==")
    print(f"bf16 ran as: {', '.join(b['ran'])}" + (f"  ({b['warnings'][0]})" if b["warnings"] else ""))
    print(f"{'':24}{'fp32':>10}{'bf16':>10}{'fp32/bf16':>11}")
    rows = (("no_shadows_s", "no shadows (s)"), ("shadows_s", "shadows (s)"), ("stroke_s", "pad stroke (s)"))
    for key, label in rows:
        if key in f and key in b:
            print(f"{label:24}{f[key]:>10.3f}{b[key]:>10.3f}{f[key] / b[key]:>10.2f}x")
    print(f"{'peak RSS (GiB)':24}{f['peak_rss_gib']:>10.2f}{b['peak_rss_gib']:>10.2f}"
          f"   (load + generations: {f['peak_rss_generate_gib']:.2f} / {b['peak_rss_generate_gib']:.2f})")
    print("PSNR bf16 vs fp32: " + ", ".join(f"{k} {v:.1f} dB" for k, v in s["psnr_db"].items()))
    print(f"shadows of sketch_0, bf16 vs fp32: {s['shadow_psnr_db']:.1f} dB, at most {s['shadow_max_diff']} "
          "grey level(s) apart")
    if "reference" in s:
        r = s["reference"]
        print(f"\nreference path (fast=False, float32){'':4}{'reference':>10}{'fp32':>10}{'ref/fp32':>10}")
        for key, label in rows:
            if key in r and key in f:
                print(f"{label:40}{r[key]:>10.3f}{f[key]:>10.3f}{r[key] / f[key]:>9.2f}x")
        print(f"{'peak RSS (GiB)':40}{r['peak_rss_gib']:>10.2f}{f['peak_rss_gib']:>10.2f}")
        print("PSNR fp32 fast vs reference: " + ", ".join(f"{k} {v:.1f} dB" for k, v in s["reference_psnr_db"].items())
              + f"; shadows at most {s['reference_shadow_max_diff']} grey level(s) apart")
    if "official" in s:
        o = s["official"]["shadows_s"]
        print(f"official code, with shadows: {o:.3f} s; dfd_kit fp32 {o / f['shadows_s']:.2f}x faster, "
              f"bf16 {o / b['shadows_s']:.2f}x faster"
              + (f", reference path {o / s['reference']['shadows_s']:.2f}x" if "reference" in s else ""))
    elif official is None:
        print("official code: not run (no --official DIR given): no side-by-side figures")
    else:
        print(f"official code: not found ({official} holds no CombineModel_jt.py): no side-by-side figures")


if __name__ == "__main__":
    sys.exit(main())
