"""Settings for the whole test run, notebooks included (they run under nbmake in kernels
that inherit this process's environment).

* DFD_CI=1 puts the notebooks in their small, CI-sized mode.
* Notebook runs poll the kernel's shell channel at least once a second (see
  :func:`_poll_shell_replies_every_second`).
* DFD_PARAMS: the model the notebooks and the widget use. Until the trained demo model is
  committed in Params/demo, an UNTRAINED model of the demo's size is written to
  .cache/untrained_demo and used instead, so every notebook still runs top to bottom (its
  pictures are then noise, not faces).
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _untrained_demo_params() -> Path:
    out = ROOT / ".cache" / "untrained_demo"
    if (out / "config.json").is_file():
        return out
    import numpy as np

    import dfd_kit  # noqa: F401  (configures Jittor first)
    from dfd_kit.config import COMPONENTS, DEMO
    from dfd_kit.pipeline import DeepFaceDrawing, build, save_model

    enc, dec, fdec, gen = build(DEMO)
    rng = np.random.default_rng(0)
    banks = {s: {c: rng.standard_normal((200, DEMO.nets.latent_dim)).astype(np.float32) for c in COMPONENTS}
             for s in ("male", "female")}
    tmp = out.with_name("untrained_demo.tmp")
    save_model(DeepFaceDrawing(DEMO, enc, dec, fdec, gen, banks), tmp, dtype=np.float32)
    os.replace(tmp, out)
    return out


def _poll_shell_replies_every_second():
    """Work around a missed wake-up in nbclient's async polling (jupyter/nbclient#312: a cell
    with an ipywidgets ``interact`` sometimes "hangs"). The kernel's execute_reply is already
    in the shell socket, but the awaiting poll is not woken and only finds it when its timeout
    (the whole cell timeout, 300 s under nbmake) runs out; notebook 03 lost 5 minutes this way
    in 3 runs of 5. Waiting in polls of at most a second finds such a reply within a second;
    a timeout still expires at the same moment."""
    import time
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    wait = AsyncZMQSocketChannel.get_msg
    if getattr(wait, "dfd_kit_polls", False):
        return

    async def get_msg(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            try:
                return await wait(self, timeout=step)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    get_msg.dfd_kit_polls = True
    AsyncZMQSocketChannel.get_msg = get_msg


def pytest_configure(config):
    _poll_shell_replies_every_second()
    os.environ.setdefault("DFD_CI", "1")
    if "DFD_PARAMS" not in os.environ and not (ROOT / "Params" / "demo" / "config.json").is_file():
        os.environ["DFD_PARAMS"] = str(_untrained_demo_params())
