#!/usr/bin/env bash
# Score the shipped model of one scale again in every mode the documents quote, writing the records
# experiments/results/sr_eval_shipped_x<S>*.json, flow_eval_x<S>*.json, warp_eval_x<S>{,_refined}.json and
# true_flow_gain_x<S>.json (run it after new weights are shipped, from a clean clone of the commit that ships
# them):
#
#   JOBS=2 bash experiments/eval_shipped.sh 4
#
# Each record is one experiments/*.py command run with one torch thread; JOBS of them run side by side.
# DRY_RUN=1 prints the commands instead.
# The list (most quoted first): the default pipeline and one pass of it, the modes without back-projection
# or refinement, LR data centred on their blocks (told and not told), noisy LR data, the x8-only LR shifts,
# and the alignment records (flow, WarpNet, the gain from the true flow).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 1 ] || { [ "$1" != 4 ] && [ "$1" != 8 ]; }; then
  echo "usage: $0 4|8" >&2
  exit 2
fi
s=$1
JOBS=${JOBS:-2}
PY=${PY:-.venv/bin/python}
R=experiments/results
block_shift=-$(((s - 2) / 2))  # the paper's grid is (s - 2) / 2 px off the blocks' centres

sr() {  # $1: record name suffix; the rest: eval_sr.py options
  local name=$1
  shift
  echo "$PY experiments/eval_sr.py --scale $s $* --model shipped=shipped --out $R/sr_eval_shipped_x${s}${name}.json"
}

flow() {  # $1: record name suffix; the rest: eval_flow.py options after the scales
  local name=$1
  shift
  echo "$PY experiments/eval_flow.py --ckpt $ckpt --scales $s --pairs 2 --size 256 $* --out $R/flow_eval_x${s}${name}.json"
}

commands() {
  local ckpt=src/sschsr/weights/sschsr_x${s}.safetensors
  sr _factor2_refined_bp --flow-factor 2 --flow-refine 150 --back-project 20
  sr _tta1_factor2_refined_bp --tta 1 --flow-factor 2 --flow-refine 150 --back-project 20
  sr _tta1 --tta 1
  sr "" ""
  sr _refined --flow-refine 150
  sr _tta1_refined --tta 1 --flow-refine 150
  sr _refined_bp --flow-refine 150 --back-project 20
  sr _tta1_refined_bp --tta 1 --flow-refine 150 --back-project 20
  sr _block_lr_told_block --tta 1 --lr-shift "$block_shift" --lr-grid block
  sr _block_lr_told_paper --tta 1 --lr-shift "$block_shift" --lr-grid paper
  sr _block_lr_told_block_refined --tta 1 --lr-shift "$block_shift" --lr-grid block --flow-refine 150
  sr _block_lr_told_block_refined_bp --tta 1 --lr-shift "$block_shift" --lr-grid block --flow-refine 150 --back-project 20
  sr _tta1_refined_noise0.005 --tta 1 --flow-refine 150 --noise-std 0.005
  sr _tta1_refined_bp_noise0.005 --tta 1 --flow-refine 150 --back-project 20 --noise-std 0.005
  sr _tta1_refined_bp_exact_noise0.005 --tta 1 --flow-refine 150 --back-project 20 --exact-fit --noise-std 0.005
  if [ "$s" = 8 ]; then
    for shift in 0.5 1; do
      sr "_lr_shift+$shift" --tta 1 --lr-shift "$shift"
      sr "_lr_shift+${shift}_refined" --tta 1 --lr-shift "$shift" --flow-refine 150
      sr "_lr_shift+${shift}_refined_bp" --tta 1 --lr-shift "$shift" --flow-refine 150 --back-project 20
    done
    sr _lr_shift-0.5 --tta 1 --lr-shift -0.5
  fi
  local he=(--flow-range 5 15 --override +data.synth.geometry.camera=false)  # homography + elastic pairs
  if [ "$s" = 8 ]; then  # the x8 flow network is scored at x4 too in the first record
    echo "$PY experiments/eval_flow.py --ckpt $ckpt --scales 8 4 --pairs 2 --size 256 --out $R/flow_eval_x8.json"
  else
    flow ""
  fi
  flow _refined --flow-refine 150
  flow _refined_where --flow-refine 150
  flow _homography_elastic "${he[@]}"
  flow _homography_elastic_refined "${he[@]}" --flow-refine 150
  if [ "$s" = 8 ]; then
    flow _tta1 --flow-tta 1
    flow _homography_elastic_tta1 "${he[@]}" --flow-tta 1
    for shift in 0.5 1; do
      flow "_homography_elastic_lr_shift+$shift" "${he[@]}" --lr-shift "$shift"
      flow "_homography_elastic_lr_shift+${shift}_refined" "${he[@]}" --lr-shift "$shift" --flow-refine 150
    done
    echo "$PY experiments/eval_flow.py --ckpt $ckpt --scales 8 --pairs 1 --size 512 ${he[*]} --flow-refine 150 --out $R/flow_eval_x8_homography_elastic_512_refined.json"
    echo "$PY experiments/eval_flow.py --ckpt $ckpt --scales 8 --pairs 1 --size 512 ${he[*]} --flow-factor 2 --flow-refine 150 --out $R/flow_eval_x8_homography_elastic_512_factor2_refined.json"
  fi
  echo "$PY experiments/eval_warp.py --ckpt $ckpt --scales $s --pairs 2 --size 256 --out $R/warp_eval_x${s}.json"
  echo "$PY experiments/eval_warp.py --ckpt $ckpt --scales $s --pairs 2 --size 256 --flow-refine 150 --out $R/warp_eval_x${s}_refined.json"
  echo "$PY experiments/true_flow_gain.py --scale $s"
}

if [ -n "${DRY_RUN:-}" ]; then
  commands | sed 's/  */ /g'
  exit 0
fi
commands | sed 's/  */ /g' | OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 xargs -P "$JOBS" -I{} sh -c 'echo "+ {}" >&2; {}'
