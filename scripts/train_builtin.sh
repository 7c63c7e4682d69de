#!/usr/bin/env bash
# Reproduce a built-in policy checkpoint (FR3 by default; EMBODIMENT=ur5e for the UR5e) from nothing,
# and print the timings:
#   1. record EPISODES scripted demonstrations (seeds SEED0, SEED0+1, ...) through the ROS graph
#      into a LeRobotDataset v3.0 folder (`vla-ros record`, via scripts/record_builtin.py), the expert
#      aiming AIM_ERROR m off the cube at 20 cm up and closer as it descends (an error in one random
#      direction per episode, corrected on the way down: with exact demonstrations the data never
#      shows the cube off-centre near the grasp, and the learned goal drifted to wherever the tool was);
#   2. train the VLA on them on the CPU (`vla-ros train`): the default preset (flow-matching head,
#      Llama backbone) with RT-1's FiLM conv encoder (with coordinate channels, so that its tokens say
#      where they look) at SIZE px on both cameras, chunks of 10 in ACTION_SPACE (ee_pose: absolute tool
#      poses, so that an error does not add up over the descent), and the goal head (its image tokens
#      also predict where the demonstration grasps: without it the model never used the instruction)
#      whose prediction conditions the action head (goal_condition; in training the true goal plus
#      GOAL_NOISE m of noise),
#      with colour-permutation augmentation (RGB channels shuffled, the instruction's colour word renamed
#      to match: the same scene asks for each colour, so the model cannot learn the target from the layout);
#   3. evaluate it on held-out seeds (`vla-ros eval --seed 90001`: seeds no recording used);
#   4. copy the model files to OUT_CKPT and write builtin.json (scripts/ship_builtin.py).
#
# Usage: scripts/train_builtin.sh [WORK_DIR]     (default artifacts/builtin_repro)
# The shipped FR3 checkpoint (2026-12-07, 41/50) was recorded as four runs of 200 (SEED0=0, 200, 400 with
# MISS_FRACTION=0, and SEED0=600 with MISS_FRACTION=0.5, each STAGES=record into its own WORK_DIR), trained
# 14,000 steps on all four (EXTRA_DATA=<the other three>/data): EPISODES=800 MISS_FRACTION=0.125 STEPS=14000
# (the defaults) gives the same kind of data in one run (the random directions come from another stream).
# Environment knobs: EMBODIMENT (fr3), ACTION_SPACE (ee_pose), EPISODES (800), SEED0 (0), SIZE (64), STEPS (14000), BATCH (32), LR (5e-4),
# EARLY_FRAMES (15) / EARLY_WEIGHT (4: the first 1.5 s of every episode, where the instruction alone decides
# which cube to go for, drawn 4x as often), GOAL_WEIGHT (1.0: the goal head's loss), EVAL_EPISODES (50),
# MAX_EPISODES (all: train on the first N recorded episodes, for a learning curve), EXTRA_DATA (more dataset
# folders to train on as well, space-separated: e.g. a second recording made with SEED0=200 into another WORK_DIR), AIM_ERROR (0.04), MISS_FRACTION (0.125: episodes whose first grasp closes beside the cube on purpose, then recovers), GOAL_NOISE (0.025), EVAL_SEED (90001), EVAL_TIMEOUT (20 simulated s), OUT_CKPT (vla_ros/policies/builtin/$EMBODIMENT), THREADS (2),
# STAGES ("record train eval ship"; e.g. STAGES="eval ship" reuses WORK_DIR/data and WORK_DIR/ckpt).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${1:-artifacts/builtin_repro}
EMBODIMENT=${EMBODIMENT:-fr3}
ACTION_SPACE=${ACTION_SPACE:-ee_pose}
EPISODES=${EPISODES:-800}
SEED0=${SEED0:-0}
SIZE=${SIZE:-64}
STEPS=${STEPS:-14000}
BATCH=${BATCH:-32}
LR=${LR:-5e-4}
EARLY_FRAMES=${EARLY_FRAMES:-15}
EARLY_WEIGHT=${EARLY_WEIGHT:-4}
GOAL_WEIGHT=${GOAL_WEIGHT:-1.0}
GOAL_NOISE=${GOAL_NOISE:-0.025}
AIM_ERROR=${AIM_ERROR:-0.04}
MISS_FRACTION=${MISS_FRACTION:-0.125}
EVAL_EPISODES=${EVAL_EPISODES:-50}
EVAL_SEED=${EVAL_SEED:-90001}
EVAL_TIMEOUT=${EVAL_TIMEOUT:-20}
OUT_CKPT=${OUT_CKPT:-vla_ros/policies/builtin/$EMBODIMENT}
EXTRA_DATA=${EXTRA_DATA:-}
THREADS=${THREADS:-2}
STAGES=${STAGES:-record train eval ship}
PY=${PY:-.venv/bin/python}
has() { [[ " $STAGES " == *" $1 "* ]]; }

export MUJOCO_GL=${MUJOCO_GL:-egl} MESA_SHADER_CACHE_DISABLE=true HF_HUB_OFFLINE=1
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
mkdir -p "$WORK"

VISION='{"goal_head": true, "goal_condition": true, "vision": {"kind": "conv_film", "image_size": '"$SIZE"', "siglip": null, "conv": {"channels": [32, 64, 64], "num_tokens": 8, "coords": true}}}'

t_all=$(date +%s)
t0=$(date +%s)
if has record; then
  echo "== record: $EPISODES scripted episodes, seeds $SEED0.. -> $WORK/data"
  "$PY" scripts/record_builtin.py --embodiment "$EMBODIMENT" --out "$WORK/data" --episodes "$EPISODES" --seed "$SEED0" \
    --fps 10 --policy-kwargs '{"params": {"aim_error_m": '"$AIM_ERROR"', "aim_error_height_m": 0.2, "detour_seed": '"$SEED0"', "miss_fraction": '"$MISS_FRACTION"'}}' | sed -u 's/\r/\n/g' | grep --line-buffered -a -E '^episode|^\{' | tee "$WORK/record.log" || true
fi
t_record=$(( $(date +%s) - t0 ))

t0=$(date +%s)
if has train; then
  echo "== train: $STEPS steps, batch $BATCH, data $WORK/data $EXTRA_DATA -> $WORK/ckpt"
  rm -rf "$WORK/ckpt"
  "$PY" -m vla_ros.cli.main train --data "$WORK/data" $EXTRA_DATA --out "$WORK/ckpt" --embodiment "$EMBODIMENT" --action-space "$ACTION_SPACE" \
    --chunk-size 10 --config "$VISION" --steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --warmup-steps 200 \
    --no-augment --val-every 1000 --val-episodes 6 --val-samples 256 --save-every 1000 --seed 0 --min-episode-frames 20 \
    --early-frames "$EARLY_FRAMES" --early-weight "$EARLY_WEIGHT" --goal-weight "$GOAL_WEIGHT" --goal-noise "$GOAL_NOISE" --colour-permutation \
    --skip-missed-grasps ${MAX_EPISODES:+--max-episodes "$MAX_EPISODES"} --threads "$THREADS" --cache-dir "$WORK/cache" --no-progress --json \
    | tee "$WORK/train.log"
fi
t_train=$(( $(date +%s) - t0 ))

t0=$(date +%s)
if has eval; then
  echo "== eval: $EVAL_EPISODES held-out episodes from seed $EVAL_SEED"
  "$PY" -m vla_ros.cli.main eval --embodiment "$EMBODIMENT" --policy vla --checkpoint "$WORK/ckpt" \
    --episodes "$EVAL_EPISODES" --seed "$EVAL_SEED" --timeout-s "$EVAL_TIMEOUT" --json 2>/dev/null \
    | sed -u 's/\r/\n/g' | grep --line-buffered -a -E '^episode|^\{' | tee "$WORK/eval.log" || true
fi
t_eval=$(( $(date +%s) - t0 ))

if has ship; then
  echo "== ship: $OUT_CKPT"
  mkdir -p "$OUT_CKPT"
  for f in config.json model.safetensors tokenizer.json norm_stats.json training.json loss_curve.png; do
    if [[ -f "$WORK/ckpt/$f" ]]; then cp "$WORK/ckpt/$f" "$OUT_CKPT/"; fi
  done
  "$PY" scripts/ship_builtin.py "$EMBODIMENT" "$WORK" "$OUT_CKPT" "$t_record" "$t_train" "$t_eval" $EXTRA_DATA
  du -sh "$OUT_CKPT"
fi
echo "timings: record ${t_record} s, train ${t_train} s, eval ${t_eval} s, total $(( $(date +%s) - t_all )) s"
