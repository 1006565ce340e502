#!/usr/bin/env bash
# Side by side: bench_sample.py of an older commit (a git worktree) and of this tree, same
# machine, same arguments, one after the other; then this tree with --orientation-grid G.
#   benchmarks/bench_sample_compare.sh OLD_WORKTREE OUT_PREFIX GRID [bench_sample args...]
set -euo pipefail
old=$1 out=$2 grid=$3
shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
run() {  # run TREE JSON [extra args]: the tree's own faket_dask first on the path
  local tree=$1 json=$2
  shift 2
  (cd "$tree" && PYTHONPATH="$tree" python benchmarks/bench_sample.py "$@" --json "$json")
}
run "$old" "$out-old.json" "$@"
run "$here" "$out-new.json" "$@"
run "$here" "$out-new-grid$grid.json" "$@" --orientation-grid "$grid"
