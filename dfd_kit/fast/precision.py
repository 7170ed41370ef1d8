"""Which arithmetic a loaded model's image path runs in: float32, or bfloat16 convolutions.

``dfd_kit.load(..., precision=...)``:

* ``"fp32"``: everything in float32, as the official code computes (the parity tests' path);
* ``"bf16"``: the convolutions of the generator, of the feature decoders' last stages and of
  the sketch decoders (the shadows) take bfloat16 weights and round their input maps to
  bfloat16, accumulating and writing float32 (:mod:`dfd_kit.fast.kernels`); norms, activations and
  residual sums stay float32. The encoders and the manifold projection are untouched, so
  latents, neighbours and weights are the float32 ones; a shadow differs from the float32
  one by at most one grey level. Where oneDNN cannot run these kernels: one warning, and
  float32;
* ``"auto"`` (the default): ``"bf16"`` where the CPU computes bfloat16 natively
  (AVX512-BF16 or AMX, as oneDNN sees it, so ``ONEDNN_MAX_CPU_ISA`` can rule it out) and the
  model is big enough to gain from it (:func:`pays_off`); else ``"fp32"``.

The converted weights are written once beside the compact cache
(:func:`dfd_kit.fast.compact.converted_checkpoint`). bf16 keeps 8 bits of mantissa, so the images
differ a little from the float32 ones; bench/README.md has the PSNRs and the speed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import ConfigError

#: The values ``precision`` takes.
PRECISIONS = ("auto", "fp32", "bf16")
#: The CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: "auto" converts a model whose generator's residual blocks are at least this wide: the
#: full-size model's (896 channels) generate twice as fast; the bundled 256 px models' (128)
#: gain a few hundredths of a second, not worth faces that depend on the CPU (bench/README.md).
AUTO_MIN_GENERATOR_WIDTH = 256
#: A feature decoder converts only its last this many upsampling stages and its output conv:
#: rounding in the early, small, wide stages is carried through every later one and cost the
#: most PSNR, for a quarter of the decoders' arithmetic (bench/README.md).
DECODER_STAGES = 2


def check_precision(precision) -> str:
    """The precision asked for, checked: one of :data:`PRECISIONS`."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, not {precision!r}")
    return precision


def cpu_flags() -> set:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_bf16() -> bool:
    """True where the CPU computes bfloat16 natively and oneDNN may use it: a flag of
    :data:`BF16_CPU_FLAGS`, and the loaded oneDNN's effective instruction set (capped by
    ``$ONEDNN_MAX_CPU_ISA``) includes AVX512-BF16. (A CPU with AVX-512 but without those
    would have oneDNN emulate bf16, slower than float32.)"""
    from .. import onednn

    if not set(BF16_CPU_FLAGS) & cpu_flags():
        return False
    isa = onednn.effective_cpu_isa()   # None: no oneDNN loaded, so no bf16 kernels either
    return isa is not None and isa & onednn.ISA_AVX512_CORE_BF16 == onednn.ISA_AVX512_CORE_BF16


def pays_off(config) -> bool:
    """Whether bf16 is worth it for a model of this configuration (see
    :data:`AUTO_MIN_GENERATOR_WIDTH`)."""
    n = config.nets
    return n.ngf * 2 ** n.n_downsample >= AUTO_MIN_GENERATOR_WIDTH


def resolve(precision: str, config=None) -> str:
    """"fp32" or "bf16": what a model of ``config`` loaded with ``precision`` runs in here.
    A bf16 choice is kept only if :func:`dfd_kit.kernels.reduced_kernels_work` (one warning
    where not)."""
    precision = check_precision(precision)
    if precision == "auto":
        precision = "bf16" if native_bf16() and (config is None or pays_off(config)) else "fp32"
    if precision == "bf16":
        import jittor as jt

        from . import kernels

        if jt.flags.use_cuda or not kernels.reduced_kernels_work():
            return "fp32"
    return precision


#: The networks bf16 converts (:func:`layers_to_convert`).
CONVERTED_KINDS = ("generator", "feature_decoder", "sketch_decoder")


def layers_to_convert(net, kind: str):
    """[(name, layer)] of the convolutions of ``net`` (a network of ``kind``, one of
    :data:`CONVERTED_KINDS`) that bf16 computes: every one wide enough for the bf16 kernels
    (:func:`dfd_kit.kernels.reducible_convs`) of the generator and of a sketch decoder, a
    feature decoder's in its last :data:`DECODER_STAGES` stages and its output conv.

    Why the decoders differ: a feature decoder's rounding is carried through the whole
    generator, and rounded in its early stages it cost the image most of its PSNR; a sketch
    decoder only draws a shadow, faint uint8 guidance, which every convolution in bf16 moves
    by at most one grey level (bench/README.md)."""
    from . import kernels

    if kind not in CONVERTED_KINDS:
        raise ValueError(f"kind must be one of {CONVERTED_KINDS}, not {kind!r}")
    convs = kernels.reducible_convs(net)
    if kind == "feature_decoder":
        first = len(net.stages) - DECODER_STAGES
        convs = [(name, conv) for name, conv in convs
                 if name == "to_output" or (name.startswith("stages.") and int(name.split(".")[1]) >= first)]
    return convs


def convert_network(net, kind: str, root: Optional[Path] = None, rel: str = "", table=None) -> int:
    """Turn the convolutions of ``net``, a network of ``kind``, that bf16 computes
    (:func:`layers_to_convert`) to bfloat16 in place. With ``root``, ``rel`` and its key
    ``table`` (official prefix, kit prefix), the converted weights come from, or go to, the cache beside the compact copy of
    ``root/rel``; without, they are rounded from the network's weights now. Returns how many
    layers were converted."""
    import numpy as np

    from . import kernels
    from .compact import converted_checkpoint

    convs = layers_to_convert(net, kind)
    bits = {}
    if root is not None and convs:
        official = {kit: off for off, kit in table}
        keys = {f"{official[name]}.weight": name for name, _ in convs}
        cached = converted_checkpoint(root, rel, "bf16", keys, kernels.bf16_bits)
        # read from the file, not through the mapping (mapped pages count as this process's)
        bits = {keys[k]: np.load(a.filename) if isinstance(a, np.memmap) else a for k, a in cached.items()}
    for name, conv in convs:
        kernels.reduce_conv(conv, bits.get(name))
        bits.pop(name, None)
    if convs:   # computed now: else each raw copy would wait in memory for the first generation
        import jittor as jt

        jt.sync([conv.weight for _, conv in convs])
    return len(convs)


__all__ = ["PRECISIONS", "CONVERTED_KINDS", "check_precision", "native_bf16", "pays_off", "resolve",
           "layers_to_convert", "convert_network"]
