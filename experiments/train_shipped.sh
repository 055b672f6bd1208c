#!/usr/bin/env bash
# The training chain of the shipped models on CPU: stage 1 (flow, small preset, trained at x8 and used at
# every scale), stage 2 (WarpNet on the frozen flow), then the full network (lite preset) at x8 and x4,
# all on data=cave_procedural (7 CAVE training scenes + 32 procedural ones; CAVE validation and test
# scenes held out). Each run writes its Hydra folder under $RUNS; export_weights.py then writes the fp16
# safetensors and their records.
#
#   bash experiments/train_shipped.sh [stage1|stage2|full8|full4|single8|single4|flowft8|flowft4|all] [OVERRIDE ...]
#
# Overrides after the stage go to every run of it (e.g. model.net.head=modulated). single8/single4 train
# the single-image baseline with the full network's budget; an ablation is a full run with an override:
#   RUNS=outputs/ablations/no_rmca bash experiments/train_shipped.sh full8 model.net.use_rmca=false
# Step counts come from the environment (defaults: what fits a 2-core CPU in about two hours):
#   STAGE1_STEPS=3000 STAGE2_STEPS=600 FULL_STEPS=2000 THREADS=1 bash experiments/train_shipped.sh all
# flowft8/flowft4 fine-tune a flow network ($FLOW_INIT, e.g. the shipped flow part or a stage-1 .ckpt) at
# one scale with larger crops and 12 updates; a full run fine-tunes a trained model with overrides:
#   FLOW_CKPT=$RUNS/flowft_x8/checkpoints/last.ckpt WARP_CKPT= FULL_STEPS=800 bash experiments/train_shipped.sh \
#       full8 model.init_ckpt=src/sschsr/weights/sschsr_x8.safetensors model.optimizer.lr=1e-4
# What the shipped weights were trained with (the chain of runs, each command) is recorded in
# experiments/results/training_shipped.json.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-outputs/shipped}
THREADS=${THREADS:-1}
STAGE1_STEPS=${STAGE1_STEPS:-3000}
STAGE2_STEPS=${STAGE2_STEPS:-600}
FULL_STEPS=${FULL_STEPS:-2000}
FLOWFT_STEPS=${FLOWFT_STEPS:-2500}
FLOWFT_LR=${FLOWFT_LR:-2e-4}
FLOW_INIT=${FLOW_INIT:-$RUNS/stage1_x8/checkpoints/last.ckpt}
# the stage-1 checkpoint stages 2 and 3 start from, and the stage-2 one the full network starts from
# (empty: WarpNet starts untrained and learns in the full stage, from the warp term of its loss)
FLOW_CKPT=${FLOW_CKPT:-$RUNS/stage1_x8/checkpoints/last.ckpt}
WARP_CKPT=${WARP_CKPT-$RUNS/stage2_x8/checkpoints/last.ckpt}
TRAIN=(env OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" .venv/bin/sschsr-train)
COMMON=(data=cave_procedural data.num_workers=1 data.eval_crop_size=256 logger=csv
        trainer.enable_progress_bar=false)

stage1() {
  "${TRAIN[@]}" experiment=stage1 scale=8 "${COMMON[@]}" \
    data.crop_size=96 data.batch_size=4 model.iters=8 model.val_iters=12 \
    trainer.max_steps="$STAGE1_STEPS" trainer.val_check_interval=500 \
    hydra.run.dir="$RUNS/stage1_x8" "${OVERRIDES[@]}"
}

flowft() {  # $1: scale. Fine-tune the flow network $FLOW_INIT at that scale (one flow network per scale)
  "${TRAIN[@]}" experiment=stage1 scale="$1" "${COMMON[@]}" \
    data.crop_size=128 data.batch_size=4 model.iters=12 model.val_iters=12 \
    model.optimizer.lr="$FLOWFT_LR" model.init_ckpt="$FLOW_INIT" \
    trainer.max_steps="$FLOWFT_STEPS" trainer.val_check_interval=250 \
    hydra.run.dir="$RUNS/flowft_x$1" "${OVERRIDES[@]}"
}

stage2() {
  "${TRAIN[@]}" experiment=stage2 scale=8 "${COMMON[@]}" \
    data.crop_size=128 data.batch_size=4 model.flow_iters=12 \
    model.flow_ckpt="$FLOW_CKPT" \
    trainer.max_steps="$STAGE2_STEPS" trainer.val_check_interval=200 \
    hydra.run.dir="$RUNS/stage2_x8" "${OVERRIDES[@]}"
}

full() {  # $1: scale
  "${TRAIN[@]}" experiment=full scale="$1" "${COMMON[@]}" \
    data.crop_size=96 data.batch_size=4 model.net.flow_iters=12 \
    model.flow_ckpt="$FLOW_CKPT" ${WARP_CKPT:+model.warp_ckpt="$WARP_CKPT"} \
    trainer.max_steps="$FULL_STEPS" trainer.val_check_interval=250 \
    hydra.run.dir="$RUNS/full_x$1" "${OVERRIDES[@]}"
}

single() {  # $1: scale. The single-image baseline with the full network's data, crops, batch and steps
  "${TRAIN[@]}" experiment=full model=single_image scale="$1" "${COMMON[@]}" \
    data.crop_size=96 data.batch_size=4 \
    trainer.max_steps="$FULL_STEPS" trainer.val_check_interval=250 \
    hydra.run.dir="$RUNS/single_x$1" "${OVERRIDES[@]}"
}

STAGE=${1:-all}
OVERRIDES=("${@:2}")
case "$STAGE" in
  stage1) stage1 ;;
  stage2) stage2 ;;
  full8) full 8 ;;
  full4) full 4 ;;
  single8) single 8 ;;
  single4) single 4 ;;
  flowft8) flowft 8 ;;
  flowft4) flowft 4 ;;
  all) stage1 && stage2 && full 8 && full 4 ;;
  *) echo "usage: $0 [stage1|stage2|full8|full4|single8|single4|flowft8|flowft4|all] [OVERRIDE ...]" >&2; exit 2 ;;
esac
