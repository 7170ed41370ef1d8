"""Settings for the whole test run, notebooks included (they run under nbmake in kernels
that inherit this process's environment).

* DFD_CI=1 puts the notebooks in their small, CI-sized mode.
* Notebook runs poll the kernel's shell channel at least once a second (see
  :func:`_poll_shell_replies_every_second`).
* An executed notebook fails its test when any cell wrote to stderr (see
  :func:`notebook_output_problems`): warnings, Jittor's logs and text progress bars render
  as red blocks that a reader takes for errors.
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


def notebook_output_problems(nb) -> list:
    """(cell index, text) for every stream output on stderr in an executed notebook.

    In a kernel, stderr is where a notebook's noise goes: Python's warnings, Jittor's log
    and compile lines (C++ writes them to file descriptor 2, which ipykernel forwards as
    stderr), tqdm's text bars. A reader sees each as a red block. Errors are not counted
    here: a cell that raised fails the notebook's run anyway."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                found.append((i, out.get("text", "")))
    return found


def _fail_notebooks_with_stderr_output():
    """Make nbmake's run of a notebook fail when :func:`notebook_output_problems` finds
    anything, naming the cells and what they wrote: the outputs are inspected in the run
    that executes the notebook anyway, so no notebook runs twice."""
    try:
        from nbmake.nb_result import NotebookError
        from nbmake.nb_run import NotebookRun
    except ImportError:   # nbmake not installed: no notebook runs
        return
    run = NotebookRun.execute
    if getattr(run, "dfd_kit_checks_stderr", False):
        return

    def execute(self):
        result = run(self)
        found = notebook_output_problems(result.nb) if result.error is None else []
        if found:
            cells = sorted({i for i, _ in found})
            summary = (f"{Path(self.filename).name}: cells {cells} wrote to stderr (warnings, logs or text "
                       "progress bars; a reader sees red blocks)")
            trace = "\n".join([summary] + [f"cell {i}: {text.strip()[:500]!r}" for i, text in found])
            result.error = NotebookError(summary=summary, trace=trace, failing_cell_index=cells[0])
        return result

    execute.dfd_kit_checks_stderr = True
    NotebookRun.execute = execute


def pytest_configure(config):
    _poll_shell_replies_every_second()
    _fail_notebooks_with_stderr_output()
    os.environ.setdefault("DFD_CI", "1")
    if "DFD_PARAMS" not in os.environ and not (ROOT / "Params" / "demo" / "config.json").is_file():
        os.environ["DFD_PARAMS"] = str(_untrained_demo_params())
