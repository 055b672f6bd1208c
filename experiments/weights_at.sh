#!/usr/bin/env bash
# Copy the weights the package shipped at an earlier commit (every part under src/sschsr/weights/) into a
# folder, so that records comparing against an earlier shipped model run from a clone:
#
#   bash experiments/weights_at.sh fc68b3b outputs/init/shipped
#   python experiments/eval_sr.py --scale 8 --tta 1 --model full=outputs/init/shipped/sschsr_x8.safetensors ...
#
# A model file names its flow and WarpNet parts, which are looked up beside it, so the folder holds them all.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ]; then
  echo "usage: $0 COMMIT DIR" >&2
  exit 2
fi
commit=$1
dir=$2
files=$(git ls-tree --name-only "$commit" src/sschsr/weights/ | grep '\.safetensors$' || true)
if [ -z "$files" ]; then
  echo "error: no shipped weights at $commit" >&2
  exit 2
fi
mkdir -p "$dir"
for f in $files; do
  git show "$commit:$f" > "$dir/$(basename "$f")"
  echo "$dir/$(basename "$f")"
done
