#!/usr/bin/env bash
# Run a command as on a system whose oneDNN is 3.x (Ubuntu 24.04's libdnnl-dev is 3.1.1, Debian
# 13's 3.7.2), without a container. In a private mount namespace (`unshare --mount`: root only)
# the system's oneDNN headers (/usr/include/dnnl*.h*, /usr/include/oneapi/dnnl) and library
# (/usr/lib/x86_64-linux-gnu/libdnnl.so*) are covered by PyPI's oneDNN 3.2 (onednn-cpu-gomp and
# onednn-devel-cpu-gomp 2023.2.0, downloaded once into .cache/onednn3_sim/), and HOME is a fresh
# folder, so Jittor's cache and oneDNN links start empty. Nothing changes outside the command.
#
#   scripts/onednn3_sim.sh make demo
#   scripts/onednn3_sim.sh --env-too make demo   # the Python environment's oneDNN covered too:
#                                                 # no oneDNN 2 anywhere, as on other platforms
# Settings (environment variables):
#   ONEDNN3_SIM_HOME    use (and keep) this HOME instead of a fresh temporary one
#   ONEDNN3_SIM_PREFIX  the Python environment --env-too covers (default: .venv of this checkout)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIM="$ROOT/.cache/onednn3_sim"
ENV_TOO=0
if [ "${1:-}" = "--env-too" ]; then ENV_TOO=1; shift; fi
if [ $# -eq 0 ]; then sed -n '2,16p' "$0" >&2; exit 2; fi
[ "$(id -u)" -eq 0 ] || { echo "onednn3_sim: needs root (unshare --mount, mount --bind)" >&2; exit 2; }

# oneDNN 3.2 from PyPI, unpacked once (a wheel is a zip file; its data/ folder holds include/ and lib/)
V3="$SIM/oneDNN-3.2"
if [ ! -f "$V3/include/oneapi/dnnl/dnnl_version.h" ]; then
  PY="$ROOT/.venv/bin/python"; [ -x "$PY" ] || PY=python3
  mkdir -p "$SIM/wheels"
  "$PY" -m pip download -q --no-deps -d "$SIM/wheels" onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0
  rm -rf "$V3.tmp" && mkdir -p "$V3.tmp"
  for w in "$SIM"/wheels/onednn_*cpu_gomp-2023.2.0-*.whl; do
    "$PY" -m zipfile -e "$w" "$V3.tmp/unpacked"
  done
  cp -r "$V3.tmp"/unpacked/*.data/data/include "$V3.tmp"/unpacked/*.data/data/lib "$V3.tmp"/
  rm -rf "$V3.tmp/unpacked" && mv "$V3.tmp" "$V3"
fi
grep -q "DNNL_VERSION_MAJOR 3" "$V3/include/oneapi/dnnl/dnnl_version.h"

if [ -n "${ONEDNN3_SIM_HOME:-}" ]; then SIM_HOME="$ONEDNN3_SIM_HOME"; mkdir -p "$SIM_HOME"
else SIM_HOME="$(mktemp -d /tmp/onednn3_sim_home.XXXXXX)"; fi
PREFIX="${ONEDNN3_SIM_PREFIX:-$ROOT/.venv}"
export V3 SIM_HOME PREFIX ENV_TOO

exec unshare --mount --propagation private bash -c '
set -euo pipefail
covered=0
cover() {   # cover(include folder, library folder): every oneDNN file there by its 3.2 namesake
  local f
  for f in "$1"/dnnl*.h "$1"/dnnl*.hpp; do
    [ -f "$f" ] && [ -f "$V3/include/${f##*/}" ] && mount --bind "$V3/include/${f##*/}" "$f" && covered=$((covered + 1))
  done
  if [ -d "$1/oneapi/dnnl" ]; then mount --bind "$V3/include/oneapi/dnnl" "$1/oneapi/dnnl"; covered=$((covered + 1)); fi
  for f in "$2"/libdnnl.so*; do   # the real files (a bind mount on a symbolic link covers its target)
    [ -f "$f" ] && [ ! -L "$f" ] && mount --bind "$V3/lib/libdnnl.so.3.2" "$f" && covered=$((covered + 1))
  done
  return 0
}
cover /usr/include /usr/lib/x86_64-linux-gnu
cover /usr/local/include /usr/local/lib
if [ "$ENV_TOO" = 1 ]; then cover "$PREFIX/include" "$PREFIX/lib"; fi
echo "onednn3_sim: $covered oneDNN files covered by oneDNN 3.2$([ "$ENV_TOO" = 1 ] && echo " (system and $PREFIX)"); HOME=$SIM_HOME" >&2
export HOME="$SIM_HOME"
unset JITTOR_HOME
exec "$@"
' onednn3_sim "$@"
