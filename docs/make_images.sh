#!/usr/bin/env bash
# Render docs/images/{preview,report}.png from a dataset store: the preview PNG as written,
# the HTML report as a headless Chromium screenshot (apt-get install -y chromium).
#
#   bash docs/make_images.sh STORE.zarr [SAMPLE]
#
# The README's pictures came from examples/two-microscopes.yaml at a tiny size (4 samples,
# 64^2 tilts at 40 A, random weights; see tests/examples/test_examples.py for the overrides).
set -euo pipefail
store=$1
sample=${2:-0}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
faket-dask preview "$store" --sample "$sample" -o "$here/images/preview.png" --dpi 72 --overwrite
faket-dask report "$store" -o "$tmp/report.html" --dpi 72
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --no-first-run --user-data-dir="$tmp/profile" \
    --hide-scrollbars --window-size=1150,1900 \
    --screenshot="$here/images/report.png" "file://$tmp/report.html" 2>/dev/null
rm -rf "$tmp"
