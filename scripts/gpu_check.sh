#!/usr/bin/env bash
# The checks that need a GPU, for a CUDA machine that brings its own torch (python3 with CUDA
# torch, transformers, tokenizers, safetensors, numpy, pyyaml, pillow, pytest):
#   1. the policy tests on a machine where CUDA is the default device: test/policies/test_cuda.py
#      (bf16 on CUDA against float32 and bf16 on the CPU, CUDA-graph replays against eager loops,
#      GPU memory release) and the rest of test/policies (modules needing MuJoCo or the MiniLM
#      package are skipped or fail to collect where those are missing);
#   2. vla-ros bench released: OpenVLA-7B and π0 at their published sizes, latency per call;
#   3. vla-ros bench policy: our presets' heads on the CPU and in bf16 on CUDA;
#   4. vla-ros bench train: one training step per preset in bf16 autocast on CUDA, full and LoRA
#      (LoRA needs peft: `pip install --no-deps peft` where it is missing).
# Results go to $OUT (default /tmp/vla_ros_gpu). rclpy, Pinocchio and MuJoCo are not needed.
set -u
OUT=${OUT:-/tmp/vla_ros_gpu}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
python3 - <<'PY' 2>&1 | tee "$OUT/versions.txt"
import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__,
      "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PY
python3 -m pytest -q -ra -p no:cacheprovider --continue-on-collection-errors test/policies test/bench/test_bench_released.py \
    2>&1 | tee "$OUT/pytest_cuda.txt"
python3 -m vla_ros.cli.main bench released --json --iterations 20 2>&1 | tee "$OUT/bench_released.txt"
python3 -m vla_ros.cli.main bench policy --json --threads "$(nproc)" --iterations 30 2>&1 | tee "$OUT/bench_policy.txt"
python3 -m vla_ros.cli.main bench train --json --iterations 10 --batch-size 32 2>&1 | tee "$OUT/bench_train.txt"
python3 -m vla_ros.cli.main bench train --json --iterations 10 --batch-size 32 --lora 2>&1 | tee "$OUT/bench_train_lora.txt"
