"""Finding a oneDNN 2 for Jittor's CPU convolutions, before Jittor is imported.

Jittor 1.3's oneDNN operators (its ``extern/mkl/ops``) and dfd_kit's own (:mod:`dfd_kit.fast.kernels`)
are written against oneDNN 2's operation descriptors, which oneDNN 3.0 removed: against the
oneDNN of Ubuntu 24.04 (3.1) or Debian 13 (3.7) they do not compile. So a oneDNN is used only
if its headers say version 2, and it is looked for in this order:

1. ``$DFD_KIT_ONEDNN``: a folder holding the ``include/`` and ``lib/`` of a oneDNN 2;
2. the Python environment's own ``include/`` and ``lib/`` (``sys.prefix``, then pip's user
   base): PyPI's ``onednn-cpu-gomp`` and ``onednn-devel-cpu-gomp`` 2022.2.1 are oneDNN 2.6.0
   built with GNU OpenMP for any glibc x86-64 Linux, and dfd_kit depends on them there;
3. the system's (Debian 12's ``libdnnl-dev`` is oneDNN 2.6.3).

Jittor looks for oneDNN only in its download folder (:func:`jittor_folder`) and downloads it
when that is empty, which fails offline; :func:`link` puts the chosen oneDNN there, replacing
what an earlier run linked (a system oneDNN 3, another environment's).
"""
from __future__ import annotations

import os
import platform
import re
import secrets
import site
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

#: Names a folder with the include/ and lib/ of a oneDNN 2, tried before all others.
ENV = "DFD_KIT_ONEDNN"
#: The oneDNN major version Jittor 1.3's operators are written for.
MAJOR = 2
#: What gives an x86-64 Linux environment its oneDNN 2 (pyproject.toml depends on it there).
PIP_PACKAGES = "onednn-cpu-gomp==2022.2.1 onednn-devel-cpu-gomp==2022.2.1"
# The folder Jittor's own download unpacks into, the one it checks before downloading.
_JITTOR_DIR = "dnnl_lnx_2.2.0_cpu_gomp"
_SYSTEM = [
    ("system", "/usr/include", ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"]),
    ("system", "/usr/local/include", ["/usr/local/lib", "/usr/local/lib64"]),
]


@dataclass(frozen=True)
class OneDNN:
    """One oneDNN installation: where it was found, its headers, its library, its version."""
    source: str               # "environment", "system", "$DFD_KIT_ONEDNN", "Jittor's download", ...
    include: str              # the folder holding dnnl.hpp
    lib: str                  # the library Jittor links (libdnnl.so.2)
    version: Tuple[int, int, int]

    def __str__(self) -> str:
        return f"oneDNN {'.'.join(map(str, self.version))} ({self.source}: {self.include})"


def version(include: str) -> Optional[Tuple[int, int, int]]:
    """(major, minor, patch) from the oneDNN headers in *include*, or None if it has none."""
    for name in ("oneapi/dnnl/dnnl_version.h", "dnnl_version.h"):
        try:
            with open(os.path.join(include, name)) as f:
                text = f.read()
        except OSError:
            continue
        found = [re.search(rf"^\s*#\s*define\s+DNNL_VERSION_{part}\s+(\d+)", text, re.M)
                 for part in ("MAJOR", "MINOR", "PATCH")]
        if found[0]:
            return tuple(int(m.group(1)) if m else 0 for m in found)
    return None


def candidates() -> List[Tuple[str, str, List[str]]]:
    """(source, include folder, library folders) to try, in order of preference."""
    out = []
    own = os.environ.get(ENV)
    if own:
        out.append((f"${ENV}", os.path.join(own, "include"), [os.path.join(own, "lib"), os.path.join(own, "lib64")]))
    out.append(("environment", os.path.join(sys.prefix, "include"), [os.path.join(sys.prefix, "lib")]))
    user = site.getuserbase()
    if user and os.path.abspath(user) != os.path.abspath(sys.prefix):
        out.append(("pip --user", os.path.join(user, "include"), [os.path.join(user, "lib")]))
    return out + _SYSTEM


def _check(source: str, include: str, libs: List[str]):
    """A usable OneDNN with the first of the library files *libs* that exists, or why not (a
    string), or None where *include* holds no oneDNN at all."""
    if not os.path.isfile(os.path.join(include, "dnnl.hpp")):
        return None
    v = version(include)
    where = f"in {include} ({source})"
    if v is None:
        return f"oneDNN headers without a version {where}"
    name = "oneDNN " + ".".join(map(str, v))
    if v[0] != MAJOR:
        return f"{name} {where}"
    lib = next((p for p in libs if os.path.isfile(p)), None)
    if lib is None:
        return f"{name} {where} without its library ({', '.join(libs)})"
    return OneDNN(source, include, lib, v)


def find() -> Tuple[Optional[OneDNN], List[str]]:
    """The first usable oneDNN of :func:`candidates`, and why those before it were passed over."""
    rejected = []
    for source, include, libdirs in candidates():
        found = _check(source, include, [os.path.join(d, f"libdnnl.so.{MAJOR}") for d in libdirs])
        if isinstance(found, OneDNN):
            return found, rejected
        if found and found not in rejected:
            rejected.append(found)
    return None, rejected


def jittor_folder(home: str) -> str:
    """Where Jittor looks for its oneDNN download, for the Jittor home *home*."""
    return os.path.join(home, ".cache", "jittor", "mkl", _JITTOR_DIR)


def linked(home: str):
    """What Jittor's folder holds now: a usable OneDNN, why it is not usable (a string), or None
    when it holds nothing. Its ``source`` is "Jittor's download" for Jittor's own unpacked files
    (which dfd_kit never replaces), else "linked before"."""
    folder = jittor_folder(home)
    include, lib = os.path.join(folder, "include"), os.path.join(folder, "lib", "libmkldnn.so")
    if not os.path.isfile(lib):
        return None
    own = os.path.isdir(include) and not os.path.islink(include)
    return _check("Jittor's download" if own else "linked before", include, [os.path.realpath(lib)])


def _replace_link(link: str, target: str) -> None:
    """Make *link* a symbolic link to *target* in one step: processes doing the same at the
    same time (mpirun ranks importing together) each see the old link or the new one."""
    if os.path.islink(link) and os.readlink(link) == target:
        return
    tmp = f"{link}.{os.getpid()}-{secrets.token_hex(4)}"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        os.unlink(tmp)
        raise


def link(dnnl: OneDNN, home: str) -> str:
    """Put *dnnl* where Jittor (home *home*) looks for its download. Returns the linked include
    folder, the one Jittor compiles against (and dfd_kit's own oneDNN kernels with it).
    Raises OSError when the folder cannot be written (a read-only home)."""
    folder = jittor_folder(home)
    os.makedirs(os.path.join(folder, "lib"), exist_ok=True)
    _replace_link(os.path.join(folder, "include"), dnnl.include)
    # the library last: Jittor takes a lib/libmkldnn.so as a complete folder
    _replace_link(os.path.join(folder, "lib", "libmkldnn.so"), dnnl.lib)
    return os.path.join(folder, "include")


def preload(dnnl: OneDNN) -> None:
    """Load the library now, globally: Jittor's operators need it by its soname
    (libdnnl.so.2), which the dynamic loader finds on its own only in system folders.
    Raises OSError if it does not load."""
    import ctypes

    ctypes.CDLL(dnnl.lib, mode=os.RTLD_NOW | os.RTLD_GLOBAL)


#: oneDNN 2's ``dnnl_cpu_isa_t`` bits for AVX-512 with native bfloat16 (AVX512-BF16); the
#: AMX value (0x3e7) holds them too, AVX2 and plain AVX-512 do not.
ISA_AVX512_CORE_BF16 = 0xE7


def effective_cpu_isa() -> Optional[int]:
    """The instruction set oneDNN's kernels use here (a ``dnnl_cpu_isa_t`` value), as the
    loaded oneDNN reports it: this CPU's, capped by ``$ONEDNN_MAX_CPU_ISA`` (or
    ``$DNNL_MAX_CPU_ISA``), which is how an older CPU is simulated. None where no oneDNN 2 is
    loaded. (The first query fixes oneDNN's choice for the process, as its first primitive would.)"""
    import ctypes

    # RTLD_NOLOAD: only a oneDNN this process has already loaded; asking must never load
    # one (a system oneDNN that Jittor does not use would then sit in the process).
    for name in (f"libdnnl.so.{MAJOR}", None):   # by soname (preloaded), else the global namespace
        try:
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL) if name else ctypes.CDLL(None)
            query = lib.dnnl_get_effective_cpu_isa
        except (OSError, AttributeError):
            continue
        query.restype = ctypes.c_int
        return int(query())
    return None


def advice() -> str:
    """What to install for Jittor's oneDNN convolutions, on this platform."""
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        return f"run `pip install {PIP_PACKAGES}` in this Python environment (or `make setup`)"
    return (f"install a oneDNN {MAJOR}.x (Debian 12: `apt-get install libdnnl-dev`) or set {ENV} to a "
            f"folder holding one (PyPI's oneDNN {MAJOR} packages are for x86-64 Linux only)")
