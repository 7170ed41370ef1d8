#!/usr/bin/env bash
# System packages dfd_kit needs beyond Python (Debian/Ubuntu):
#   g++                  Jittor compiles its kernels at first import
#   openmpi-bin/-dev     multi-process (data-parallel) training with `mpirun`
#   chromium             the real-browser test of the drawing widget (driven by Playwright)
#   nodejs/npm           facesjs, the cartoon-face generator behind the demo model's data
#   libdnnl-dev          only on CPUs other than x86-64, and only where it is oneDNN 2 (Debian 12):
#                        Jittor's fast CPU convolutions. On x86-64 pip installs oneDNN 2 into the
#                        virtualenv (pyproject.toml); Ubuntu 24.04 and Debian 13 ship oneDNN 3,
#                        which Jittor 1.3 cannot use.
# Installs only what is missing; needs root or sudo. Elsewhere, install these by hand (README).
set -euo pipefail
pkgs=(g++ openmpi-bin libopenmpi-dev chromium nodejs npm libcairo2)
if command -v apt-cache >/dev/null 2>&1 && [ "$(dpkg --print-architecture)" != amd64 ] &&
   apt-cache policy libdnnl-dev 2>/dev/null | grep -q "Candidate: 2\."; then
  pkgs+=(libdnnl-dev)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# node/npm may come from elsewhere (nodesource, nvm): accept any working `npm`.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]:-}"
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "dfd_kit: please install: ${missing[*]} (no apt-get here; see README 'Install')" >&2; exit 0
fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "dfd_kit: installing system packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
