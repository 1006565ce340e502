#!/usr/bin/env bash
# Render docs/images/{preview,report}.png from a dataset store: the preview PNG as written,
# the HTML report as a headless Chromium screenshot (apt-get install -y chromium).
#
#   bash docs/make_images.sh PREVIEW_STORE.zarr REPORT_STORE.zarr
#
# The pictures in docs/images came from `faket-dask generate --demo small` (the preview of
# sample 0) and from examples/two-microscopes.yaml at a tiny size (the report: 4 samples,
# --override tilts.shape=[96,96] tilts.pixel_spacing=20 sample.thickness=32
# 'tilts.angle_choices=["-60:60:30", "-60:60:20"]' style.weights=random), offline.
set -euo pipefail
store=$1
report_store=$2
sample=0
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
faket-dask preview "$store" --sample "$sample" -o "$here/images/preview.png" --dpi 72 --overwrite
faket-dask report "$report_store" -o "$tmp/report.html" --dpi 72
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --no-first-run --user-data-dir="$tmp/profile" \
    --hide-scrollbars --window-size=1150,1900 \
    --screenshot="$here/images/report.png" "file://$tmp/report.html" 2>/dev/null
rm -rf "$tmp"
