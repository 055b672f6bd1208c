#!/usr/bin/env bash
# Models on LR data made four ways (the paper's degradation, block means, a sigma-2 Gaussian at block
# centres with 0.5% noise, a sigma-4 Gaussian on the paper's grid with 1% noise), run as sschsr-predict
# runs them with the grid stated (--lr-grid) and the PSF estimated (--psf auto):
#
#   bash experiments/eval_lr_variants.sh SCALE SPLIT TAG [EVAL_SR OPTION ...] -- --model NAME=PATH [...]
#
# SPLIT: val (chart_and_stuffed_toy, fake_and_real_peppers: to choose) or test (the data config's test
# split: to score once). Writes experiments/results/sr_lr_<TAG>_<SPLIT>_x<SCALE>_<variant>.json.
# The pipeline defaults: --tta 8 --flow-factor 2 --flow-refine 150 --back-project 20 (pass --tta 1 for
# the one-pass mode).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=$1 SPLIT=$2 TAG=$3
shift 3
OPTS=()
while [[ $# -gt 0 && $1 != -- ]]; do OPTS+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
MODELS=("$@")
SCENES=()
[[ $SPLIT == val ]] && SCENES=(--scenes chart_and_stuffed_toy fake_and_real_peppers)
PY=${PY:-.venv/bin/python}
declare -A VARIANT=(
  [paper]="--lr-made paper --lr-grid paper"
  [block]="--lr-made block --lr-grid block"
  [gauss2_n0.005]="--lr-made gauss --lr-sigma 2 --noise-std 0.005 --lr-grid block"
  [gauss4_n0.01]="--lr-made gauss --lr-sigma 4 --noise-std 0.01 --lr-phase paper --lr-grid paper"
)
for v in ${VARIANTS:-paper block gauss2_n0.005 gauss4_n0.01}; do
  # shellcheck disable=SC2086
  $PY experiments/eval_sr.py --scale "$SCALE" "${SCENES[@]}" --tta 8 --flow-factor 2 --flow-refine 150 \
    --back-project 20 --psf auto --no-wrong-ref ${VARIANT[$v]} "${OPTS[@]}" "${MODELS[@]}" \
    --out "experiments/results/sr_lr_${TAG}_${SPLIT}_x${SCALE}_${v}.json"
done
