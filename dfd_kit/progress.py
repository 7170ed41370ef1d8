"""Progress bars that read well live and afterwards.

:func:`tqdm` is ``tqdm.auto.tqdm`` (a widget in a notebook, text on stderr in a terminal)
except for one thing: in a notebook, the bar's saved output is its final state. tqdm's
widget puts its text form into the notebook when it is first displayed, at 0%, and never
changes it, so a notebook read without a kernel (GitHub, nbviewer, a printed handout, or
a run saved by nbclient) shows every bar stuck at 0%, however far it went. Here the bar is
displayed with an id and the display is updated when it closes: the saved text is the last
line ("100% ... 24/24 [00:05, 4.6 face/s]"), and a bar made with ``leave=False`` leaves
nothing behind, as it does live.

Nothing here imports Jittor.
"""
from __future__ import annotations

import sys


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where output is displayed, not printed to a terminal)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _notebook_bar_class():
    """tqdm's widget bar with a display id (see the module docstring); None without ipywidgets."""
    try:
        from IPython.display import display
        from tqdm.notebook import IProgress, tqdm_notebook
    except ImportError:
        return None
    if IProgress is None:   # tqdm found no ipywidgets
        return None

    class NotebookBar(tqdm_notebook):
        def __init__(self, *args, **kwargs):
            self._handle = None
            kwargs["display"] = False   # displayed by _show, with an id
            super().__init__(*args, **kwargs)
            if not self.disable and self.delay <= 0:
                self._show()

        def _show(self):
            self._handle = display(self.container, display_id=True)
            self.displayed = True

        def display(self, *args, check_delay=True, **kwargs):
            # tqdm's own delayed display has no id; show the bar with one first
            if check_delay and self.delay > 0 and not self.displayed and hasattr(self, "container"):
                self._show()
            return super().display(*args, check_delay=check_delay, **kwargs)

        def close(self):
            if self.disable:
                return
            super().close()
            if self._handle is not None:
                if self.leave:
                    self._handle.update(self.container)   # its text form: the final line
                else:
                    self._handle.update({"text/plain": ""}, raw=True)

    return NotebookBar


_BAR = []


def tqdm(*args, **kwargs):
    """A progress bar: ``tqdm.auto.tqdm(*args, **kwargs)``, whose output in a notebook ends
    in its final state (see the module docstring)."""
    if in_notebook():
        if not _BAR:
            _BAR.append(_notebook_bar_class())
        if _BAR[0] is not None:
            return _BAR[0](*args, **kwargs)
        kwargs.setdefault("file", sys.stdout)   # text bar: stdout, not the red stderr block
    from tqdm.std import tqdm as text_bar

    return text_bar(*args, **kwargs)
