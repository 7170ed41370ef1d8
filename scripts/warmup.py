"""Compile Jittor's kernels once, before the tests: its core at first import, then the
kernels of a demo-size generation (cached on disk, so the notebook kernels and the
browser test's kernel start warm instead of compiling under a timeout). The work is
dfd_kit.warm_up's, which notebook 00 calls too."""
import time

t0 = time.time()
import dfd_kit  # noqa: E402  (configures Jittor)

dfd_kit.warm_up()
print(f"Jittor warm-up done in {time.time() - t0:.0f} s")
