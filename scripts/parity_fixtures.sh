#!/usr/bin/env bash
# The official code's recorded outputs for the parity tests (expected/case_*.npz, ~3 MB each)
# are generated data, so they are not kept in git: copy them from the parity fixture in the
# shared folder beside the checkout (../shared/official_parity, or $DFD_PARITY_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
src="${DFD_PARITY_DIR:-../shared/official_parity}/expected"
dst="tests/fixtures/official_parity/expected"
for f in case_0.npz case_1.npz case_2.npz; do
  [ -f "$dst/$f" ] && continue
  if [ ! -f "$src/$f" ]; then
    echo "dfd_kit: $dst/$f is missing and $src/$f was not found; set DFD_PARITY_DIR to the" \
         "official_parity folder (the parity tests need its recorded outputs)" >&2
    exit 1
  fi
  cp "$src/$f" "$dst/$f"
done
