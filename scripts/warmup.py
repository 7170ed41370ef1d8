"""Compile Jittor's kernels once, before the tests: its core at first import, then the
kernels of a demo-size generation (cached on disk, so the notebook kernels and the
browser test's kernel start warm instead of compiling under a timeout)."""
import time

import numpy as np

t0 = time.time()
import dfd_kit  # noqa: E402  (configures Jittor)
from dfd_kit.config import COMPONENTS, DEMO  # noqa: E402
from dfd_kit.pipeline import DeepFaceDrawing, build  # noqa: E402

enc, dec, fdec, gen = build(DEMO)
rng = np.random.default_rng(0)
banks = {s: {c: rng.standard_normal((40, DEMO.nets.latent_dim)).astype(np.float32) for c in COMPONENTS}
         for s in ("male", "female")}
model = DeepFaceDrawing(DEMO, enc, dec, fdec, gen, banks)
sketch = np.full((256, 256), 255, np.uint8)
sketch[90:100, 60:110] = 0
model.generate(sketch, shadows=True)
print(f"Jittor warm-up done in {time.time() - t0:.0f} s")
