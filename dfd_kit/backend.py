"""Jittor set-up, done once when dfd_kit is imported.

Jittor configures itself from environment variables read at its own import, so
everything here must run *before* ``import jittor``:

* ``nvcc_path``: Jittor picks up any ``nvcc`` on the PATH and then fails on a
  machine without a GPU. We hand it CUDA only when a GPU is really present.
* oneDNN: Jittor downloads its own oneDNN build at first import, which fails
  offline. A system oneDNN (Debian's ``libdnnl-dev``) works in its place; we
  expose it where Jittor looks for its download, so nothing is fetched. Without
  oneDNN convolutions fall back to Jittor's generated kernels (~60x slower on CPU).
"""
from __future__ import annotations

import glob
import os
import sys
import warnings

# Jittor's own download folder name, which it checks before downloading.
_JITTOR_DNNL_DIR = "dnnl_lnx_2.2.0_cpu_gomp"
_SYSTEM_DNNL_LIBS = [
    "/usr/lib/x86_64-linux-gnu/libdnnl.so",
    "/usr/lib/aarch64-linux-gnu/libdnnl.so",
    "/usr/local/lib/libdnnl.so",
    "/usr/lib/libdnnl.so",
]
_SYSTEM_DNNL_INCLUDES = ["/usr/include", "/usr/local/include"]

#: What the backend set-up found; filled in by :func:`configure`.
info: dict = {}


def gpu_present() -> bool:
    """True when an NVIDIA GPU is visible to this process (not merely nvcc installed)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _jittor_home() -> str:
    # Jittor keeps its cache under $JITTOR_HOME or the user's home.
    return os.environ.get("JITTOR_HOME") or os.path.expanduser("~")


def _find_system_dnnl():
    for lib in _SYSTEM_DNNL_LIBS:
        if os.path.isfile(lib):
            for inc in _SYSTEM_DNNL_INCLUDES:
                if os.path.isfile(os.path.join(inc, "dnnl.hpp")):
                    return lib, inc
    return None


def _link_system_dnnl() -> bool:
    """Place a system oneDNN where Jittor expects its own download. Returns True if usable."""
    target = os.path.join(_jittor_home(), ".cache", "jittor", "mkl", _JITTOR_DNNL_DIR)
    lib_link = os.path.join(target, "lib", "libmkldnn.so")
    if os.path.isfile(lib_link):
        return True
    found = _find_system_dnnl()
    if found is None:
        return False
    lib, inc = found
    os.makedirs(os.path.join(target, "lib"), exist_ok=True)
    inc_link = os.path.join(target, "include")
    for link, src in ((lib_link, lib), (inc_link, inc)):
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(src, link)
    # Jittor's -lmkldnn also needs the name libmkldnn.so at link time; the lib dir has it.
    return True


def configure() -> dict:
    """Set Jittor's environment before it is imported. Safe to call more than once."""
    if info:
        return info
    if "jittor" in sys.modules:
        warnings.warn("jittor was imported before dfd_kit; dfd_kit could not configure it "
                      "(GPU detection, offline oneDNN). Import dfd_kit first.", stacklevel=3)
    use_cuda = gpu_present()
    if not use_cuda:
        os.environ["nvcc_path"] = ""
    # Passive OpenMP waits: spinning threads make Jittor 4-5x slower whenever the CPU is
    # shared (a notebook kernel beside JupyterLab, parallel test runs), measured here.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("log_silent", "1")  # Jittor's compile log is noise for notebook users
    dnnl = False
    if os.environ.get("use_mkl", "1") == "1":
        dnnl = _link_system_dnnl()
        if not dnnl:
            # No oneDNN: turn it off so Jittor does not try (and fail) to download it.
            os.environ["use_mkl"] = "0"
            warnings.warn("oneDNN (Debian/Ubuntu package libdnnl-dev) was not found: dfd_kit runs "
                          "with Jittor's slower built-in convolutions. Install it with "
                          "`sudo apt-get install libdnnl-dev` (or `make setup`) for ~60x faster CPU "
                          "convolutions.", stacklevel=3)
    info.update(cuda=use_cuda, onednn=dnnl)
    return info
