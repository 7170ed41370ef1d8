"""Benchmark one generation, stage by stage, against what this CPU can do.

    python bench/bench_generate.py [--params DIR] [--repeats 3] [--json FILE] [--no-demo]

For the full-size model (the stand-in official Params, written to .cache/standin_params
if missing) and the demo-size model (Params/demo, or a randomly initialised DEMO-config
model when it is absent), it reports:

* the time of each stage (median of ``--repeats`` warm runs, after one run that compiles);
* total generation time with and without shadows;
* the FLOPs of every network (2 x multiply-accumulates of each Conv2d, ConvTranspose and
  Linear, counted from the shapes that flow through them; norms, activations, padding and
  numpy stages are not counted), and the FLOP/s each stage achieves;
* this machine's convolution throughput, measured in the same run (before and after each
  model's timings, as the machine may be shared) on a 3x3 conv
  256 -> 256 at 64 x 64 (the shape class of the generator's residual blocks);
* efficiency = no-shadow time / (its FLOPs / measured throughput)   (target <= 1.3), and
  shadow time / core (no-shadow) time                             (target <= 1);
* peak resident memory (getrusage) after each model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import dfd_kit  # noqa: E402  (configures Jittor before it is imported)
from dfd_kit.config import COMPONENTS, DEMO  # noqa: E402

SKETCH = ROOT / "tests" / "fixtures" / "official_parity" / "inputs" / "sketch_0.png"
STAGES = ("normalise+crop", "encode", "project", "shadows", "feature map", "synthesis")


# --------------------------------------------------------------------------- FLOP counting

@contextmanager
def count_flops(into: dict, key: str):
    """While active, add 2 x MACs of every Conv2d / ConvTranspose / Linear call to into[key].
    Shapes are known when an op is created, so nothing needs to be computed."""
    from jittor import nn

    from dfd_kit.fast.layers import NarrowConv

    def conv_macs(self, x, y):
        kh, kw = self.kernel_size
        return int(np.prod(y.shape)) * (self.in_channels // self.groups) * kh * kw

    def conv_t_macs(self, x, y):   # each input value scatters into Cout*kh*kw outputs
        kh, kw = self.kernel_size
        return int(np.prod(x.shape)) * (self.out_channels // self.groups) * kh * kw

    def linear_macs(self, x, y):
        return int(np.prod(x.shape)) * int(y.shape[-1])

    def reduced_macs(self, x, y):   # a bf16 layer (dfd_kit.fast.precision) of either kind
        return (conv_t_macs if isinstance(self, nn.ConvTranspose) else conv_macs)(self, x, y)

    from dfd_kit.fast.kernels import ReducedConv

    # NarrowConv has its own execute (a direct kernel) that may not reach nn.Conv's; so has a
    # layer converted to bf16
    macs = {nn.Conv: conv_macs, NarrowConv: conv_macs, nn.ConvTranspose: conv_t_macs, nn.Linear: linear_macs,
            ReducedConv: reduced_macs}
    originals = {cls: cls.__dict__["execute"] for cls in macs}
    active = []   # a NarrowConv falling back to nn.Conv's execute is counted once

    def counted(cls):
        def execute(self, x):
            active.append(self)
            try:
                y = originals[cls](self, x)
            finally:
                active.pop()
            if not any(m is self for m in active):
                into[key] += 2 * macs[cls](self, x, y)
            return y
        return execute

    # The channels-last path calls oneDNN directly, past the layers' execute; counting goes
    # through the layers instead (the same convolutions, so the same FLOPs).
    from dfd_kit.fast import kernels
    channels_last = kernels.channels_last
    kernels.channels_last = lambda: False
    for cls in macs:
        cls.execute = counted(cls)
    try:
        yield
    finally:
        kernels.channels_last = channels_last
        for cls, f in originals.items():
            cls.execute = f


def network_flops(model, shadow_batch: dict) -> dict:
    """FLOPs of each network family for one generation. ``shadow_batch``: how many neighbours
    each sketch decoder decodes (those with positive weight)."""
    import jittor as jt

    lay, n = model.layout, model.config.nets
    flops = defaultdict(int)
    with jt.no_grad():
        for c in COMPONENTS:
            s = lay.crop_size(c)
            with count_flops(flops, "encoders"):
                model.encoders[c](jt.zeros((1, 1, s, s)))
            with count_flops(flops, "feature decoders"):
                model.feature_decoders[c](jt.zeros((1, n.latent_dim)))
            if c in model.sketch_decoders and shadow_batch.get(c):
                # what a shadow runs: each row up to its last ReLU (the early stages in
                # chunks of up to 16 rows), the affine tail once (FastLatentDecoder.weighted_sum;
                # it computes, as it syncs)
                with count_flops(flops, "sketch decoders (shadows)"):
                    model.sketch_decoders[c].weighted_sum(jt.zeros((shadow_batch[c], n.latent_dim)),
                                                          np.ones(shadow_batch[c]))
        with count_flops(flops, "generator"):
            model.generator(jt.zeros((1, n.feature_channels, lay.size, lay.size)))
    jt.gc()
    return dict(flops)


# --------------------------------------------------------------------------- timing

def median_time(fn, repeats: int):
    """Median (wall seconds, process CPU seconds) of ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def conv_throughput(repeats: int = 7) -> dict:
    """FLOP/s of Jittor convolutions on this machine: a 3x3 conv 256->256 at 64x64, and for
    reference a 3x3 stride-2 transposed conv 256->256 from 64x64 to 128x128. Per wall
    second and per CPU second (all threads)."""
    import jittor as jt
    from jittor import nn

    jt.set_global_seed(0)
    x = jt.randn(1, 256, 64, 64)
    conv = nn.Conv2d(256, 256, 3, padding=1)
    conv_t = nn.ConvTranspose(256, 256, 3, stride=2, padding=1, output_padding=1)
    out = {}
    for name, layer, macs in (("conv3x3 256->256 @64", conv, 256 * 256 * 9 * 64 * 64),
                              ("convT3x3 s2 256->256 @64->128", conv_t, 256 * 256 * 9 * 64 * 64)):
        def run():
            with jt.no_grad():
                layer(x).sync()
        run(), run()
        t, c = median_time(run, repeats)
        out[name] = {"seconds": t, "cpu_seconds": c, "flops": 2 * macs, "flops_per_s": 2 * macs / t,
                     "flops_per_cpu_s": 2 * macs / c}
    return out


PROBE = "conv3x3 256->256 @64"


def time_stages(model, sketch, sex: str, repeats: int):
    """Median seconds of each stage, run in sequence as generate() does; and the projections."""
    times = defaultdict(list)
    for _ in range(repeats):
        t = time.perf_counter()
        crops = model.crop(model.normalise(sketch))
        t, times["normalise+crop"] = _lap(t, times["normalise+crop"])
        latents = model.encode(crops)
        queries = model.encode_queries(crops)
        t, times["encode"] = _lap(t, times["encode"])
        proj = model.project(latents, sex=sex, queries=queries)
        t, times["project"] = _lap(t, times["project"])
        model.compose_shadows({c: model.shadow(c, proj[c], sex) for c in COMPONENTS})
        t, times["shadows"] = _lap(t, times["shadows"])
        fmap, _ = model.feature_map({c: p.vector for c, p in proj.items()})
        fmap.sync()
        t, times["feature map"] = _lap(t, times["feature map"])
        model.synthesize(fmap)
        t, times["synthesis"] = _lap(t, times["synthesis"])
    return {k: statistics.median(v) for k, v in times.items()}, proj


def _lap(t0, bucket):
    t = time.perf_counter()
    bucket.append(t - t0)
    return t, bucket


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def bench_model(name: str, model, sketch, repeats: int, sex="male") -> dict:
    t0 = time.perf_counter()
    model.generate(sketch, sex=sex, shadows=True, keep_features=False)       # compiles
    first = time.perf_counter() - t0
    probes = [conv_throughput()[PROBE]]       # bracket the timings: the machine may be shared
    stages, proj = time_stages(model, sketch, sex, repeats)
    total_no, cpu_no = median_time(lambda: model.generate(sketch, sex=sex, shadows=False, keep_features=False),
                                   repeats)
    total_sh, cpu_sh = median_time(lambda: model.generate(sketch, sex=sex, shadows=True, keep_features=False),
                                   repeats)
    probes.append(conv_throughput()[PROBE])
    throughput = statistics.mean(p["flops_per_s"] for p in probes)
    per_cpu_s = statistics.mean(p["flops_per_cpu_s"] for p in probes)
    batch = {c: int((p.weights > 0).sum()) for c, p in proj.items()}
    flops = network_flops(model, batch)
    core_flops = flops["encoders"] + flops["feature decoders"] + flops["generator"]
    stage_flops = {"encode": flops["encoders"], "shadows": flops.get("sketch decoders (shadows)", 0),
                   "feature map": flops["feature decoders"], "synthesis": flops["generator"]}
    return {
        "model": name, "size": model.layout.size, "first_run_s": first, "stages_s": stages,
        "stage_flops": stage_flops, "network_flops": flops, "shadow_batch": batch,
        "total_no_shadows_s": total_no, "total_with_shadows_s": total_sh,
        "cpu_no_shadows_s": cpu_no, "cpu_with_shadows_s": cpu_sh,
        "core_flops": core_flops, "throughput_flops_per_s": throughput, "throughput_flops_per_cpu_s": per_cpu_s,
        "efficiency": total_no / (core_flops / throughput),     # 1 = as fast as the probe conv
        "efficiency_cpu": cpu_no / (core_flops / per_cpu_s),    # the same in CPU seconds
        "shadow_over_core": stages["shadows"] / total_no,
        "shadow_over_core_by_difference": (total_sh - total_no) / total_no,
        "peak_rss_mb": peak_rss_mb(),
    }


# --------------------------------------------------------------------------- models

def full_size_model(params, precision="auto"):
    from dfd_kit.standin import full_size_params

    params = full_size_params(params)
    model = dfd_kit.load(params, precision=precision)
    return model, f"full-size ({params}), {model.precision}"


def demo_models(precision="auto"):
    """The bundled 256 x 256 models (photo, cartoon); a random one of their size when neither is there."""
    found = [(dfd_kit.load(name, precision=precision), f"{name} ({folder})") for name, folder in
             (("photo", dfd_kit.PHOTO_PARAMS), ("cartoon", dfd_kit.DEMO_PARAMS)) if (folder / "config.json").is_file()]
    return found or [demo_model_random()]


def demo_model_random():
    import jittor as jt
    from dfd_kit.pipeline import DeepFaceDrawing, build

    jt.set_global_seed(0)
    enc, dec, fdec, gen = build(DEMO)
    rng = np.random.default_rng(0)
    banks = {s: {c: rng.standard_normal((2000, DEMO.nets.latent_dim)).astype(np.float32) for c in COMPONENTS}
             for s in ("male", "female")}
    return (DeepFaceDrawing(DEMO, enc, dec, fdec, gen, banks),
            "demo-size, RANDOMLY INITIALISED (Params/demo absent; 2000-row random banks)")


# --------------------------------------------------------------------------- report

def print_report(r: dict) -> None:
    g = 1e9
    print(f"\n== {r['model']}: {r['size']}x{r['size']} ==")
    print(f"first (compiling) run: {r['first_run_s']:.1f} s")
    print(f"{'stage':<16}{'median s':>10}{'GFLOP':>10}{'GFLOP/s':>10}")
    for s in STAGES:
        t, f = r["stages_s"][s], r["stage_flops"].get(s)
        print(f"{s:<16}{t:>10.3f}" + (f"{f / g:>10.2f}{f / g / t:>10.1f}" if f else f"{'-':>10}{'-':>10}"))
    print(f"{'total, no shadows':<28}{r['total_no_shadows_s']:>8.3f} s  "
          f"({r['core_flops'] / g:.1f} GFLOP, {r['core_flops'] / g / r['total_no_shadows_s']:.1f} GFLOP/s)")
    print(f"{'total, with shadows':<28}{r['total_with_shadows_s']:>8.3f} s")
    print(f"CPU seconds (all threads): {r['cpu_no_shadows_s']:.2f} without shadows, {r['cpu_with_shadows_s']:.2f} with")
    print("FLOPs per network: " + ", ".join(f"{k} {v / g:.2f} G" for k, v in r["network_flops"].items()))
    print(f"sketch-decoder batch per component: {r['shadow_batch']}")
    print(f"probe conv throughput around these runs: {r['throughput_flops_per_s'] / g:.1f} GFLOP/s "
          f"({r['throughput_flops_per_cpu_s'] / g:.1f} GFLOP per CPU second)")
    print(f"efficiency  time / (FLOPs / probe throughput) = {r['efficiency']:.2f}   (target <= 1.3); "
          f"in CPU seconds {r['efficiency_cpu']:.2f}")
    print(f"shadows / core time = {r['shadow_over_core']:.2f} (stage)  "
          f"{r['shadow_over_core_by_difference']:.2f} (difference of totals)   (target <= 1)")
    print(f"peak RSS so far: {r['peak_rss_mb']:.0f} MB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=None, help="full-size Params (default: the stand-in, written if missing)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--no-demo", action="store_true", help="skip the demo-size models (photo and cartoon)")
    ap.add_argument("--no-full", action="store_true", help="skip the full-size model (the demo model alone)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="load(precision=...): auto (the default) picks bf16 for the full-size model where "
                         "the CPU has native bf16; see bench_precision.py for the two side by side")
    args = ap.parse_args(argv)

    import jittor as jt

    info = {"python": platform.python_version(), "jittor": jt.__version__, "cpu": platform.processor() or
            platform.machine(), "cores": os.cpu_count(), "backend": dict(dfd_kit._backend.info),
            "load_avg_start": os.getloadavg()}
    print(f"machine: {info['cores']} cores, jittor {info['jittor']}, oneDNN {info['backend'].get('onednn')}, "
          f"load average {info['load_avg_start'][0]:.1f}")
    probe = conv_throughput()
    for k, v in probe.items():
        print(f"throughput probe {k}: {v['seconds'] * 1e3:.1f} ms, {v['flops_per_s'] / 1e9:.1f} GFLOP/s, "
              f"{v['flops_per_cpu_s'] / 1e9:.1f} GFLOP per CPU second")

    from PIL import Image
    sketch = np.asarray(Image.open(SKETCH).convert("L"))
    results = []
    if not args.no_demo:   # first, so that its peak RSS is its own
        for model, name in demo_models(args.precision):
            name = f"{name}, {model.precision}"
            results.append(bench_model(name, model, sketch, args.repeats))
            print_report(results[-1])
            del model
    if not args.no_full:
        model, name = full_size_model(args.params, args.precision)
        results.append(bench_model(name, model, sketch, args.repeats))
        print_report(results[-1])

    info["load_avg_end"] = os.getloadavg()
    print(f"\nload average at the end: {info['load_avg_end'][0]:.1f} (figures are noisy when it exceeds {os.cpu_count()})")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "throughput": probe, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
