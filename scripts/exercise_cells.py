"""The "## Exercises" sections at the end of notebooks 01-04 and 06, and their solution
notebooks in notebooks/solutions/.

    python scripts/exercise_cells.py            # (re)write them

Each tutorial notebook is read, everything from its "## Exercises" cell on is replaced by
the cells below, and it is written back at once (other cells are left exactly as they are,
so edits to the rest of the notebook made meanwhile are kept). The solution notebooks are
written whole. Cells are written without outputs.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"


def intro(name: str) -> str:
    """The paragraph that opens each Exercises section, wrapped like the notebooks' prose."""
    return textwrap.fill(
        "Decide on your answer to a prediction before you run its cell. Where you write a function, the cell "
        "below it calls a checker from `dfd_kit.exercises`: it tries your function next to the kit's own on "
        "random and edge-case inputs and answers in one paragraph, passed or the first input where the two "
        "differ, with a hint. It never shows the kit's code. Run such a cell once as it is: the checker says "
        f"that nothing is implemented yet. The answers are in `solutions/{name}_solutions.ipynb`.",
        100, break_on_hyphens=False)


def md(text):
    return ("markdown", text.strip("\n"))


def code(text):
    return ("code", text.strip("\n"))


def stub(name: str, args: str):
    """The code cell of a "write it" exercise: the learner's stub, then its checker's call."""
    return code(f"""
from dfd_kit.exercises import check_{name}


def {name}({args}):
    ...  # your code here


check_{name}({name});   # the ";" keeps the returned result from repeating the paragraph
""")


# ----------------------------------------------------------------------------- 01

EX01 = [
    md(f"""
## Exercises

{intro('01_components')}

### Predict, then run: one stroke, which crops?

The cell below draws a short black stroke across the middle of the rows that the nose box and the mouth
box share. Which crops does it change: the nose's only, the nose's and the mouth's, or the remainder's
as well?
"""),
    code("""
import numpy as np
from dfd_kit.examples import example_sketch

sketch = example_sketch("clean1_male", model.layout)   # a held-out sketch in the photo model's style
nose, mouth = model.layout.box("nose"), model.layout.box("mouth")
row = (mouth.y + nose.y + nose.size) // 2          # halfway down the rows both boxes cover
left, right = max(nose.x, mouth.x) + 4, min(nose.x + nose.size, mouth.x + mouth.size) - 4
stroked = sketch.copy()
stroked[row - 1:row + 2, left:right] = 0           # black, three pixels thick
before, after = model.crop(sketch), model.crop(stroked)
[c for c in dfd_kit.COMPONENTS if not np.array_equal(before[c], after[c])]
"""),
    md("""
### Predict, then run: whose left eye?

Is the `left_eye` box over the eye on the left of the picture, or over the drawn person's own left eye,
which the viewer sees on the right?
"""),
    code("""
box = model.layout.box("left_eye")
"the left of the picture" if box.x + box.size / 2 < model.layout.size / 2 else "the right of the picture"
"""),
    md("""
### Write it: `crop_components`

Write `crop_components(sketch, layout)`. `sketch` is a uint8 array of `layout.size` by `layout.size`
pixels, dark strokes on white. Return a dict with the five names of `dfd_kit.COMPONENTS` as its keys:

* each of the four parts (`dfd_kit.config.PARTS`) is the square of its box, `layout.box(name)`, cut out
  of the sketch; a box has `x` (its first column), `y` (its first row) and `size`;
* the remainder is a copy of the whole sketch with the four part boxes painted white (`255`).

Leave the sketch you are given unchanged.
"""),
    stub("crop_components", "sketch, layout"),
]

SOL01 = [
    md("""
# 01 · Components: solutions to the exercises

The exercises are at the end of `../01_components.ipynb`. Run this notebook to see every solution pass
its checker (`strict=True` makes a failing check an error, so a wrong solution fails the notebook).
"""),
    code("""
import numpy as np

import dfd_kit  # noqa: F401  (configures Jittor first)
from dfd_kit.config import PARTS
from dfd_kit.exercises import check_crop_components
"""),
    md("""
### Predict, then run: one stroke, which crops?

The nose's and the mouth's crops change, the remainder's does not. The boxes overlap, so a stroke in
the rows they share lands in both crops; the remainder has every part box painted white, so nothing
drawn inside a part box ever reaches the remainder's encoder.

### Predict, then run: whose left eye?

The left of the picture. The names follow the image as it is seen (the official files call the two
eyes `eye1` and `eye2`, in that order), so `left_eye` is the drawn person's right eye.

### Write it: `crop_components`

Slices of a numpy image are `[rows, columns]`, that is `[y:y + size, x:x + size]`, and the end of a
slice is not included. The parts are copied before anything is painted, and the painting happens on a
copy, so the caller's sketch stays as it was.
"""),
    code("""
def crop_components(sketch, layout):
    crops = {}
    remainder = sketch.copy()
    for name in PARTS:
        b = layout.box(name)
        crops[name] = sketch[b.y:b.y + b.size, b.x:b.x + b.size].copy()
        remainder[b.y:b.y + b.size, b.x:b.x + b.size] = 255
    crops["remainder"] = remainder
    return crops


check_crop_components(crop_components, strict=True);
"""),
]

# ----------------------------------------------------------------------------- 02

EX02 = [
    md("""
## Exercises

Two predictions: decide on your answer before you run each cell. The answers are in
`solutions/02_embedding_solutions.ipynb`.

### Predict, then run: a bar across one eye

The cell below paints a thick black bar over the outer part of the left eye's box, where no other box
reaches, and encodes the sketch again. For each component it prints how far the latent lies from the
nearest latent of its bank, before and after. Which components move? Does the left eye end up nearer
to the real eyes of the bank, or farther from them?
"""),
    code("""
import numpy as np
from dfd_kit.examples import example_sketch
from dfd_kit.manifold import nearest_neighbours

sketch = example_sketch("clean1_male", model.layout)   # a held-out sketch in the photo model's style
b = model.layout.box("left_eye")
barred = sketch.copy()
barred[b.y + b.size // 4:b.y + b.size // 2, b.x:b.x + b.size // 3] = 0


def distance_to_bank(latents):   # squared distance to the nearest row of the male bank
    return {c: float(nearest_neighbours(z, model.banks["male"][c], 2)[1][0]) for c, z in latents.items()}


clean, rough = (distance_to_bank(model.encode(model.crop(s))) for s in (sketch, barred))
{c: f"{clean[c]:.1f} -> {rough[c]:.1f}" for c in dfd_kit.COMPONENTS}
"""),
    md("""
### Predict, then run: the average mouth

The mean of all the mouth latents of the female bank is a latent too, and so is the midpoint of two
of them. Decoded, does the mean look like a typical mouth, like a blur, or like nothing at all? And the
midpoint of two mouths?
"""),
    code("""
bank = model.banks["female"]["mouth"]
rows = np.stack([bank.mean(axis=0), bank[0], bank[1], (bank[0] + bank[1]) / 2])
dp.show_images(list(model.decode_neighbours("mouth", rows)),
               ["mean of the bank", "first row", "second row", "their midpoint"])
"""),
]

SOL02 = [
    md("""
# 02 · Component embedding: answers to the exercises

The exercises are at the end of `../02_embedding.ipynb`; both are predictions, so this notebook holds
the answers and their reasons. Run the cells there to compare.

### Predict, then run: a bar across one eye

Only the left eye's latent moves. The bar lies inside the left eye's box and outside every other box,
so the other parts' crops are unchanged, and the remainder does not see it either: its crop has the
part boxes painted white. The left eye's latent ends up farther from the nearest eye in the bank: the
encoder was trained on clean eyes only, and nothing like a black bar was among them, so the drawing's
latent leaves the cloud of real eyes. That is the gap manifold projection (notebook 03) closes.

### Predict, then run: the average mouth

The mean of the bank decodes to a mouth, but a faint, generic one: averaging many latents cancels what
makes each mouth different and keeps what they share. The midpoint of two mouths decodes to a single
mouth, not to a double exposure of the two; it may look more like one of them than the other. The
decoder draws something mouth-like between real samples, which is what lets a combination of
neighbours (notebook 03) stand for a plausible part.
"""),
]

# ----------------------------------------------------------------------------- 03

EX03 = [
    md(f"""
## Exercises

{intro('03_manifold_projection')}

### Predict, then run: a drawing that is already in the bank

Project a latent that is exactly one of the bank's rows. Which row comes first among its neighbours,
what are the weights, and how far does projection move the latent?
"""),
    code("""
import numpy as np
from dfd_kit.manifold import project_to_manifold

bank = model.banks["male"]["mouth"]
q = project_to_manifold(bank[5], bank, model.config.k, weight=1.0)
print("neighbours:", q.neighbours[:4], "...")
print("weights:   ", q.weights.round(3)[:4], "...")
print("largest change of a latent entry:", float(np.abs(q.projected - bank[5]).max()))
"""),
    md("""
### Write it: the K nearest rows

Write `nearest_rows(latent, bank, k)`. `latent` has shape (D,) and `bank` (N, D). Return the indices of
the K rows of `bank` nearest to `latent` in squared Euclidean distance (the sum of the squared
differences), nearest first, as an integer array of shape (K,). Rows at exactly the same distance may
come in any order.
"""),
    stub("nearest_rows", "latent, bank, k"),
    md("""
### Write it: the locally-linear weights

Write `locally_linear_weights(latent, neighbours)`. `neighbours` has shape (K, D), its first row the
anchor (the nearest neighbour). Return the K weights, the anchor's first, that the kit's fit gives. The
fit, in words:

* The weights must add up to one, so only the weights of the neighbours other than the anchor are free,
  and the anchor's weight is one minus their sum. Written that way, the weighted combination is the
  anchor plus each other neighbour's weight times its difference to the anchor. Finding the free
  weights is then an ordinary least-squares problem: the matrix of those differences (one column per
  non-anchor neighbour) times the free weights should match `latent` minus the anchor.
* One more equation goes below those: every coefficient is `ANCHOR_PENALTY` (printed by the cell), the
  right-hand side is zero. Its squared error is that constant squared times the squared sum of the free
  weights, which is (one minus the anchor's weight) squared. So the fit pays for moving weight away from
  the anchor, and the result stays near one real sample instead of mixing many.
* `np.linalg.lstsq` solves the stacked system. It also copes when two neighbours are identical (a bank
  can hold the same sketch twice), where the normal equations are singular.
"""),
    code("""
from dfd_kit.exercises import ANCHOR_PENALTY, check_locally_linear_weights

print("ANCHOR_PENALTY =", ANCHOR_PENALTY)


def locally_linear_weights(latent, neighbours):
    ...  # your code here


check_locally_linear_weights(locally_linear_weights);
"""),
]

SOL03 = [
    md("""
# 03 · Manifold projection: solutions to the exercises

The exercises are at the end of `../03_manifold_projection.ipynb`. Run this notebook to see every
solution pass its checker (`strict=True` makes a failing check an error, so a wrong solution fails the
notebook).
"""),
    code("""
import numpy as np

import dfd_kit  # noqa: F401  (configures Jittor first)
from dfd_kit.exercises import ANCHOR_PENALTY, check_locally_linear_weights, check_nearest_rows
"""),
    md("""
### Predict, then run: a drawing that is already in the bank

The row itself comes first: its distance to the latent is zero. The weights are one for it and zero for
every other neighbour, and projection does not move the latent at all. With the anchor equal to the
latent, zero weights on the others reproduce the latent exactly and cost nothing in the anchor
penalty, so no other answer can do better. (If the bank held the same row twice, the earlier copy
would come first, with the same result.)

### Write it: the K nearest rows

`bank - latent` subtracts the latent from every row (numpy broadcasting); `np.argsort` gives the
positions of the distances from smallest to largest, and a stable sort keeps equal distances in row
order, as the kit does.
"""),
    code("""
def nearest_rows(latent, bank, k):
    d = ((bank.astype(np.float64) - latent.astype(np.float64)) ** 2).sum(axis=1)
    return np.argsort(d, kind="stable")[:k]


check_nearest_rows(nearest_rows, strict=True);
"""),
    md("""
### Write it: the locally-linear weights

The differences to the anchor are the columns of a (D, K - 1) matrix; the penalty row goes below it and
a zero below the right-hand side. `np.linalg.lstsq` returns the free weights; the anchor's is one minus
their sum.
"""),
    code("""
def locally_linear_weights(latent, neighbours):
    v = neighbours.astype(np.float64)
    anchor, others = v[0], v[1:]
    m = np.vstack([(others - anchor).T, np.full((1, len(others)), ANCHOR_PENALTY)])
    r = np.append(latent - anchor, 0.0)
    free = np.linalg.lstsq(m, r, rcond=None)[0]
    return np.concatenate([[1.0 - free.sum()], free])


check_locally_linear_weights(locally_linear_weights, strict=True);
"""),
]

# ----------------------------------------------------------------------------- 04

EX04 = [
    md(f"""
## Exercises

{intro('04_feature_mapping_and_synthesis')}

### Predict, then run: which map shows where?

Where boxes overlap, only one component's map can show in the face map. The cell below asks the kit
which one does at three pixels of the nose box: its centre, the middle of its bottom row, and its
top-left corner. Predict them first.
"""),
    code("""
from dataclasses import replace

import numpy as np
from dfd_kit.mapping import paste_owner

lay = model.layout


def shown(layout):   # per pixel, the name of the component whose map shows there
    owner, _ = paste_owner(layout)   # the part's index in layout.paste_order, -1 where the remainder shows
    return np.array(layout.paste_order + ("remainder",))[owner]


nose = lay.box("nose")
pixels = {"centre": (nose.y + nose.size // 2, nose.x + nose.size // 2),
          "middle of the bottom row": (nose.y + nose.size - 1, nose.x + nose.size // 2),
          "top-left corner": (nose.y, nose.x)}
{where: str(shown(lay)[y, x]) for where, (y, x) in pixels.items()}
"""),
    md("""
### Predict, then run: the paste order reversed

If the parts were pasted in the reverse order, how much of the face map would show another component's
map: none of it, a small part, or most of it?
"""),
    code("""
reverse = replace(lay, paste_order=lay.paste_order[::-1])
f"{(shown(reverse) != shown(lay)).mean():.1%} of the face map would show another component's map"
"""),
    md("""
### Write it: paste the part maps

Write `paste_parts(maps, layout)`. `maps` holds a float32 map of shape (C, S, S) per component, S being
the side of its box; the remainder's is as large as the face. Return the (C, `layout.size`,
`layout.size`) face map the kit builds: start from a copy of the remainder's map and paste each part at
its box (`layout.box(name)`, with `x`, `y` and `size`), in the order `layout.paste_order`, later parts
covering earlier ones. The nose keeps only its top `layout.nose_rows` rows, so the mouth keeps the rows
the two boxes share. Leave the maps you are given unchanged.
"""),
    stub("paste_parts", "maps, layout"),
]

SOL04 = [
    md("""
# 04 · Feature mapping and image synthesis: solutions to the exercises

The exercises are at the end of `../04_feature_mapping_and_synthesis.ipynb`. Run this notebook to see
the solution pass its checker (`strict=True` makes a failing check an error, so a wrong solution fails
the notebook).
"""),
    code("""
import dfd_kit  # noqa: F401  (configures Jittor first)
from dfd_kit.exercises import check_paste_parts
"""),
    md("""
### Predict, then run: which map shows where?

For the bundled models: the centre of the nose box shows the nose, the middle of its bottom row shows
the mouth, and its top-left corner shows the left eye. The bottom rows of the nose box are trimmed off
the nose and belong to the mouth box, which is pasted first and not covered there. The top-left corner
lies inside the left eye's box too, and the eyes are pasted after the nose, so they cover it.

### Predict, then run: the paste order reversed

A small part: only pixels covered by more than one box can change, the rows the nose and the mouth
share and the corners where the nose box reaches up between the eyes. Everywhere else a single map
covers a pixel, whatever the order.

### Write it: paste the part maps

Rows first: a part goes to `face[:, y:y + size, x:x + size]`. Only the nose is trimmed, and the copy
keeps the caller's remainder map as it was.
"""),
    code("""
def paste_parts(maps, layout):
    face = maps["remainder"].copy()
    for name in layout.paste_order:
        b = layout.box(name)
        rows = layout.nose_rows if name == "nose" else b.size
        face[:, b.y:b.y + rows, b.x:b.x + b.size] = maps[name][:, :rows]
    return face


check_paste_parts(paste_parts, strict=True);
"""),
]

# ----------------------------------------------------------------------------- 06

EX06 = [
    md(f"""
## Exercises

{intro('06_train_your_own')}

### Predict, then run: how much of the loss is ink?

The lines of a sketch cover few of a crop's pixels, and stage 1's loss gives each line pixel the extra
weight `ink_weight` of `Stage1Config`. What share of the loss's total weight falls on line pixels: about
as small as their share of the pixels, or much larger?
"""),
    code("""
from dfd_kit.training import Stage1Config
from dfd_kit.training.stage1 import stack_crops

ink_weight = Stage1Config().ink_weight
targets = stack_crops(data.sketches[:4], config.layout)    # crops in [-1, 1]: ink is below 0
{c: f"ink is {(y < 0).mean():.1%} of the pixels and "
    f"{((1 + ink_weight) * (y < 0)).sum() / (1 + ink_weight * (y < 0)).sum():.0%} of the weight"
 for c, y in targets.items()}
"""),
    md("""
### Write it: one stage-1 training step

Write `stage1_step(encoders, decoders, optimizer, inputs, targets, layout, ink_weight)`, one step of the
loop `train_stage1` runs. `encoders` and `decoders` are dicts of the five components' networks,
`optimizer` an Adam over all of them, `inputs` and `targets` uint8 sketches of shape (B, size, size)
(the inputs may be rough copies of the clean targets). The step:

* crops both batches, `stack_crops(sketches, layout)`, which gives {component: float32 `(B, 1, S, S)` in
  `[-1, 1]`};
* runs each component's input crops through its encoder and decoder (`jt.array(x)` turns an array into
  a Jittor variable) and scores the output against that component's target crops with
  `reconstruction_loss(output, target, "mse", ink_weight)`;
* adds up the five losses and takes one optimizer step on the sum, `optimizer.step(total)`, which
  computes the gradients and updates every network;
* returns the total as a float (`total.item()`).

The checker runs your step and the kit's on two identical copies of a tiny model and compares the losses
and the updated weights; it takes a few seconds.
"""),
    code("""
import jittor as jt
from dfd_kit.exercises import check_stage1_step
from dfd_kit.training.stage1 import reconstruction_loss, stack_crops


def stage1_step(encoders, decoders, optimizer, inputs, targets, layout, ink_weight):
    ...  # your code here


check_stage1_step(stage1_step);   # the ";" keeps the returned result from repeating the paragraph
"""),
]

SOL06 = [
    md("""
# 06 · Train your own: solutions to the exercises

The exercises are at the end of `../06_train_your_own.ipynb`. Run this notebook to see the solution
pass its checker (`strict=True` makes a failing check an error, so a wrong solution fails the notebook).
"""),
    code("""
import dfd_kit  # noqa: F401  (configures Jittor first)
import jittor as jt
from dfd_kit.config import COMPONENTS
from dfd_kit.exercises import check_stage1_step
from dfd_kit.training.stage1 import reconstruction_loss, stack_crops
"""),
    md("""
### Predict, then run: how much of the loss is ink?

Much larger. If a fraction f of the pixels is ink and each ink pixel weighs 1 + w against the paper's 1,
the ink's share of the weight is (1 + w) f / (1 + w f): for a small f, about 1 + w times its share of
the pixels. Without the weight, a blank crop would already score well, and the auto-encoders would learn
to draw paper.

### Write it: one stage-1 training step

One loss per component, summed, and one optimizer step on the sum: every network gets its gradient
from its own component's loss, and Adam moves all of them together once.
"""),
    code("""
def stage1_step(encoders, decoders, optimizer, inputs, targets, layout, ink_weight):
    x, y = stack_crops(inputs, layout), stack_crops(targets, layout)
    total = sum(reconstruction_loss(decoders[c](encoders[c](jt.array(x[c]))), jt.array(y[c]), "mse", ink_weight)
                for c in COMPONENTS)
    optimizer.step(total)
    return total.item()


check_stage1_step(stage1_step, strict=True);
"""),
]

TUTORIALS = {
    "01_components": (EX01, SOL01),
    "02_embedding": (EX02, SOL02),
    "03_manifold_projection": (EX03, SOL03),
    "04_feature_mapping_and_synthesis": (EX04, SOL04),
    "06_train_your_own": (EX06, SOL06),
}


def _cells(spec, prefix):
    cells = []
    for i, (kind, text) in enumerate(spec):
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        cell.id = f"{prefix}{i}"
        cells.append(cell)
    return cells


def write_exercises(name: str, spec) -> None:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)   # read right before writing: others edit the earlier cells
    start = next((i for i, c in enumerate(nb.cells)
                  if c.cell_type == "markdown" and c.source.lstrip().startswith("## Exercises")), len(nb.cells))
    nb.cells = nb.cells[:start] + _cells(spec, f"{name[:2]}-ex")
    nbformat.validate(nb)
    nbformat.write(nb, path)


def write_solutions(name: str, spec, kernelspec, language_info) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = kernelspec
    nb.metadata["language_info"] = language_info
    nb.cells = _cells(spec, f"{name[:2]}-sol")
    nbformat.validate(nb)
    SOLUTIONS.mkdir(exist_ok=True)
    nbformat.write(nb, SOLUTIONS / f"{name}_solutions.ipynb")


def main():
    for name, (ex, sol) in TUTORIALS.items():
        write_exercises(name, ex)
        meta = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).metadata
        write_solutions(name, sol, meta["kernelspec"], meta.get("language_info", {"name": "python"}))


if __name__ == "__main__":
    main()
