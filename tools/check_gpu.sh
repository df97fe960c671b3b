#!/usr/bin/env bash
# GPU readiness check, for a CUDA machine (not run in CI; a few minutes on one GPU):
#
#   bash tools/check_gpu.sh                      # logs under output/check_gpu/
#   PYTHON=python3.12 OUT=/tmp/check bash tools/check_gpu.sh
#
# 1. the CUDA-marked tests (`pytest -m cuda`, tests/test_cuda.py): on-device crops, the model on the
#    GPU against the CPU (float32, fp16/bf16 autocast, folded caches), AMP training steps and AMP
#    resuming a float32 checkpoint, SyncBN over 2 GPUs with one GPU's statistics (2+ GPUs);
# 2. 20 training iterations of the quickstart config with --num-gpus = the GPU count (and with
#    torchrun when there are 2+ GPUs), then --eval-only on the weights they saved;
# 3. tools/benchmark.py --device cuda: HRNeXt-S and -B, float32 and bf16, against the reference
#    formulation and timm's hrnet_w32 (NCHW and channels-last), figures also written as json.
#
# What must be installed. A machine without a package registry needs wheels for ITS Python (e.g.
# cp312, manylinux x86_64) carried in, then `pip install --no-index --find-links WHEELS_DIR <names>`:
#   torch and torchvision built for the machine's CUDA (+ the nvidia-*-cu12 / triton wheels torch
#     lists as requirements; `pip download torch torchvision --python-version 3.12
#     --only-binary=:all: -d WHEELS_DIR` on a connected machine fetches them all)
#   detectron2 built against that torch and Python (sal-detectron2==0.7.2, or a wheel built from
#     source with `pip wheel --no-build-isolation 'git+...detectron2'` on a machine with that torch)
#   fvcore iopath yacs termcolor tabulate cloudpickle omegaconf hydra-core antlr4-python3-runtime==4.9.3
#     portalocker pycocotools xtcocotools "numpy<2" "opencv-python-headless<4.11" matplotlib pillow
#     tqdm pyyaml "setuptools<81" (and their dependencies: contourpy cycler fonttools kiwisolver
#     pyparsing python-dateutil six packaging)
#   pytest (iniconfig pluggy packaging) for step 1; timm (huggingface_hub safetensors pyyaml) for step 3
# and this package on the path (the script sets PYTHONPATH to this clone). The tests that read the
# shared fixtures need ../shared (or $HRNEXT_SHARED); without it they skip.
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-output/check_gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
FAILED=()

step() { echo; echo "=== $*"; }
run() {  # run NAME CMD...: log to $OUT/NAME.log, keep going on failure, report at the end
    local name=$1; shift
    local t0=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then
        echo "ok   $name ($((SECONDS - t0)) s)"
    else
        echo "FAIL $name ($((SECONDS - t0)) s): see $OUT/$name.log"; tail -n 25 "$OUT/$name.log"
        FAILED+=("$name")
    fi
}

step "environment"
"$PY" - <<'EOF' || exit 2
import importlib, sys
wheels = {"torch": "torch (CUDA build)", "torchvision": "torchvision (matching torch)",
          "detectron2": "detectron2 (built for this torch and Python)", "fvcore": "fvcore", "iopath": "iopath",
          "pycocotools": "pycocotools", "xtcocotools": "xtcocotools", "cv2": "opencv-python-headless<4.11",
          "numpy": "numpy<2", "pytest": "pytest", "timm": "timm (for the hrnet_w32 baseline)"}
missing = []
for mod, wheel in wheels.items():
    try:
        importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - report every broken import, not only ImportError
        missing.append(f"{wheel}  [{mod}: {type(e).__name__}: {e}]")
print(f"python {sys.version.split()[0]}")
if missing:
    print("missing or broken (carry these wheels, see the header of tools/check_gpu.sh):")
    print("\n".join("  " + m for m in missing))
    if any(m.split()[0] in ("torch", "detectron2", "pytest") for m in missing):
        sys.exit(1)
import numpy, torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), numpy {numpy.__version__}")
if not torch.cuda.is_available():
    print("CUDA is not available: nothing to check here")
    sys.exit(1)
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i} {torch.cuda.get_device_name(i)}")
EOF
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")

step "1. CUDA tests"
run cuda_tests "$PY" -m pytest -q -m cuda tests -p no:cacheprovider

step "2. training with --num-gpus $NGPU, then --eval-only"
# Generate the synthetic dataset once, before the training processes start.
run dataset "$PY" -c "import hrnext_d2; from detectron2.data import DatasetCatalog; \
[DatasetCatalog.get(n) for n in ('synthetic_crowd_train', 'synthetic_crowd_val')]"
TRAIN_OPTS=(--config-file configs/quickstart/hrnext_small_synthetic.yaml MODEL.DEVICE cuda
            SOLVER.MAX_ITER 20 SOLVER.WARMUP_ITERS 5 SOLVER.IMS_PER_BATCH $((16 * NGPU))
            DATALOADER.NUM_WORKERS 2 TEST.VISUALIZE_NUM 0)
run train "$PY" tools/train_net.py --num-gpus "$NGPU" "${TRAIN_OPTS[@]}" OUTPUT_DIR "$OUT/train"
run eval_only "$PY" tools/train_net.py --eval-only "${TRAIN_OPTS[@]}" \
    MODEL.WEIGHTS "$OUT/train/model_final.pth" OUTPUT_DIR "$OUT/eval_only"
grep -h "copypaste" "$OUT/train.log" "$OUT/eval_only.log" 2>/dev/null | tail -n 4
if [ "$NGPU" -ge 2 ]; then
    run torchrun "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" tools/train_net.py \
        "${TRAIN_OPTS[@]}" OUTPUT_DIR "$OUT/torchrun"
    grep -h "Model state identical" "$OUT/torchrun/log.txt" 2>/dev/null | tail -n 1
fi

step "3. benchmark: HRNeXt-S/B, float32 and bf16, against timm hrnet_w32"
for size in small base; do
    for amp in none bf16; do
        amp_opt=(); [ "$amp" != none ] && amp_opt=(--amp "$amp")
        run "benchmark_${size}_${amp}" "$PY" tools/benchmark.py --device cuda "${amp_opt[@]}" \
            --config-file "configs/coco/hrnext_${size}_coco_256x192.yaml" --batch 32 \
            --json "$OUT/benchmark_${size}_${amp}.json"
        grep -h "img/s\|x$" "$OUT/benchmark_${size}_${amp}.log" | tail -n 12
    done
done

echo
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "GPU check passed (logs in $OUT)"
else
    echo "GPU check FAILED: ${FAILED[*]} (logs in $OUT)"
    exit 1
fi
