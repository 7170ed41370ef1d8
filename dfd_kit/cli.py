"""Command line: ``python -m dfd_kit <command>`` (or ``dfd-kit <command>``).

    generate SKETCH_OR_DIR... --out DIR    sketches -> faces (OUT/<stem>.png)
    download-official                      fetch the official weights into Params/
    standin-params DIR                     write full-size stand-in weights (tests, benchmarks)

Exit codes: 0 ok; 1 some input failed (each failure is one ``error:`` line on stderr);
2 unusable arguments or Params.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .config import COMPONENTS, PHOTO
from .errors import DFDError, ParamsError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _weight(text: str) -> float:
    try:
        w = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= w <= 1.0:   # also rejects nan
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return w


def _k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if k < 2:
        raise argparse.ArgumentTypeError(f"K must be at least 2, not {k}")
    return k


def build_parser() -> argparse.ArgumentParser:
    from .download import add_download_parser

    parser = argparse.ArgumentParser(prog="python -m dfd_kit",
                                     description="DeepFaceDrawing: faces from freehand sketches.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("generate", help="turn sketches into face images",
                       description="Generate a face for each sketch; writes OUT/<stem>.png "
                                   "(and OUT/<stem>_shadow.png with --shadows).")
    g.add_argument("inputs", nargs="+", metavar="SKETCH_OR_DIR",
                   help="sketch images, or folders of them (" + ", ".join(IMAGE_EXTENSIONS) + ")")
    g.add_argument("--params", default=None, metavar="DIR",
                   help="Params folder, or 'photo', 'cartoon' (also 'demo'), 'official' for Params/ "
                        "(default: the bundled photo model)")
    g.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    g.add_argument("--sex", choices=("male", "female"), default="male", help="which feature bank (default: male)")
    g.add_argument("--k", type=_k, default=None, help="neighbours for manifold projection (default: the model's)")
    for c in COMPONENTS:
        g.add_argument(f"--{c.replace('_', '-')}", dest=c, type=_weight, default=None, metavar="W",
                       help=f"{c.replace('_', ' ')} weight in [0, 1]: 1 = plausible, 0 = as drawn (default: the model's "
                            f"blend_weight, {PHOTO.blend_weight:g} for the photo model, 1 for the others)")
    g.add_argument("--anchor", choices=("nearest", "official"), default="nearest",
                   help="neighbour order: 'official' reproduces the official code (default: nearest)")
    g.add_argument("--shadows", action="store_true", help="also write the shadow guidance image")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="arithmetic of the generator and decoders: auto (bf16 where the CPU has it and it "
                        "pays off: the full-size model), fp32 (bit-faithful to the official code) or bf16")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=run_generate)

    add_download_parser(sub)

    s = sub.add_parser("standin-params", help="write full-size stand-in weights (about 2.2 GB)",
                       description="Write deterministic pseudo-random weights in the official Params "
                                   "layout (the weights the parity fixture was recorded with).")
    s.add_argument("out", metavar="DIR")
    s.set_defaults(func=run_standin)
    return parser


def expand_inputs(paths: Sequence[str]) -> List[Path]:
    """Folders -> their image files (sorted); files (and missing paths) pass through, so that
    a missing file is reported like any other bad input."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(p)
    return files


def _output_stems(files: Sequence[Path]) -> List[str]:
    """<stem>, made unique when two inputs share one (a/x.png, b/x.png -> x, x_2)."""
    seen, stems = {}, []
    for f in files:
        n = seen[f.stem] = seen.get(f.stem, 0) + 1
        stems.append(f.stem if n == 1 else f"{f.stem}_{n}")
    return stems


def _error(path, err: Exception) -> None:
    from tqdm.auto import tqdm

    message = " ".join(str(err).split())   # one line, whatever the message
    tqdm.write(f"error: {path}: {message}", file=sys.stderr)


def run_generate(args) -> int:
    import dfd_kit
    from PIL import Image
    from tqdm.auto import tqdm

    files = expand_inputs(args.inputs)
    if not files:
        print("error: no sketch images found in " + ", ".join(args.inputs), file=sys.stderr)
        return 1
    try:
        model = dfd_kit.load(args.params, shadows=args.shadows, precision=args.precision)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    weights = {c: getattr(args, c) for c in COMPONENTS if getattr(args, c) is not None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for f, stem in zip(tqdm(files, desc="generate", unit="sketch", disable=True if args.no_progress else None),
                       _output_stems(files)):
        try:
            res = model.generate(f, part_weights=weights, sex=args.sex, k=args.k, anchor=args.anchor,
                                 shadows=args.shadows, keep_features=False)
            Image.fromarray(res.image).save(out / f"{stem}.png")
            if args.shadows:
                Image.fromarray(res.shadow).save(out / f"{stem}_shadow.png")
        except (DFDError, OSError, ValueError, MemoryError) as e:   # one bad file never stops the batch
            _error(f, e)
            failed += 1
    return 1 if failed else 0


def run_standin(args) -> int:
    from .standin import write_standin_params

    out = write_standin_params(args.out)
    print(f"stand-in Params written to {out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
