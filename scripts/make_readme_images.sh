#!/usr/bin/env bash
# Regenerate the README pictures in docs/img/ with the CLI (which also exercises it):
# trains the built-in digits net (20 epochs, ~20 s on 2 cores) unless a run is given.
#   scripts/make_readme_images.sh [RUN_DIR]     (RUN_DIR holds checkpoint.npz + curves.png)
# Run from anywhere; uses .venv/bin/python when present.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
ns() { "$PY" -m netspec "$@"; }
IMG=docs/img
mkdir -p "$IMG"
RUN="${1:-}"
if [ -z "$RUN" ]; then
  RUN="$(mktemp -d)/digits"
  ns train specs/digits.yaml --out "$RUN" --no-progress
fi
CK="$RUN/checkpoint.npz"

ns draw specs/digits.yaml -o "$IMG/digits_net.png"
ns draw specs/resnet20.yaml -o "$IMG/resnet20_net.png"
ns viz specs/digits.yaml --checkpoint "$CK" --what filters -o "$IMG/digits_filters.png"
ns viz specs/digits.yaml --checkpoint "$CK" --what activations --layer conv1 conv2 conv3 \
   --index 3 -o "$IMG/digits_activations.png"
ns viz specs/digits.yaml --checkpoint "$CK" --what occlusion --index 3 --patch 2 --stride 1 \
   -o "$IMG/digits_occlusion.png"
ns viz specs/digits.yaml --checkpoint "$CK" --what confusion -o "$IMG/digits_confusion.png"
cp "$RUN/curves.png" "$IMG/digits_curves.png"
chmod 644 "$IMG"/*.png

# the README promises < 200 KB per picture
for f in "$IMG"/*.png; do
  size=$(wc -c < "$f")
  if [ "$size" -gt 204800 ]; then echo "warning: $f is $size bytes (> 200 KB)" >&2; fi
done
ls -l "$IMG"
