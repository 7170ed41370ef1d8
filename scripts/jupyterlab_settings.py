"""JupyterLab defaults the kit needs, written into this Python environment's JupyterLab.

    python scripts/jupyterlab_settings.py     # run by `make setup` and binder/postBuild

* Kernel comms over subshells off. JupyterLab 4.4+ sends widget messages to a kernel
  subshell and remembers the subshell's id; after a kernel restart (Restart Kernel, or a
  kernel that died) it keeps using the old id, the new kernel drops every message
  ("Unknown subshell_id" in the server log) and the drawing pad no longer answers strokes
  until the page is reloaded. Without subshells widget messages go to the main shell, as
  in every JupyterLab before 4.4; the pad never needs them while a cell runs.

The values go to ``<prefix>/share/jupyter/lab/settings/overrides.json``, merged with what is
there: they replace JupyterLab's defaults, and a user's own settings still win.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OVERRIDES = {
    "@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "disabled"},
}


def write_overrides(prefix: Path) -> Path:
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    current = {}
    if path.is_file():
        try:
            current = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path} is not valid JSON ({e}); fix or delete it, then run this again")
    for plugin, values in OVERRIDES.items():
        current.setdefault(plugin, {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


if __name__ == "__main__":
    print(f"JupyterLab settings for dfd_kit written to {write_overrides(Path(sys.prefix))}")
