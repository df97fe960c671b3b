#!/usr/bin/env bash
# Installs hrnext_d2 and everything it needs into the current Python environment.
#
# - torch / torchvision: kept when already importable, else torch==2.14.1 torchvision==0.29.1.
# - detectron2: kept when already importable (e.g. built from source), else the registry wheel
#   sal-detectron2==0.7.2 (upstream detectron2 a59f0563). That wheel is tagged cp310 but is pure
#   Python apart from an optional `_C` extension, so it is installed under a py3 tag.
# - detectron2's runtime dependencies, pinned where newer releases break it, and onnx / onnxruntime
#   (export and the onnxruntime pose pipeline) in the same call, so numpy stays below 2.
# - this package, editable.
set -euo pipefail
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."
pipi() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[install] torch==2.14.1 torchvision==0.29.1"
  pipi torch==2.14.1 torchvision==0.29.1
fi

echo "[install] detectron2 runtime dependencies"
pipi "numpy<2" "opencv-python-headless<4.11" "setuptools<81" fvcore iopath pycocotools xtcocotools \
  omegaconf hydra-core yacs termcolor tabulate cloudpickle tqdm tensorboard matplotlib Pillow pytest \
  onnx onnxruntime

if "$PY" -c "import detectron2" 2>/dev/null; then
  echo "[install] detectron2 already installed: $("$PY" -c 'import detectron2; print(detectron2.__version__, detectron2.__file__)')"
else
  echo "[install] detectron2 from the sal-detectron2==0.7.2 wheel"
  tmp=$(mktemp -d)
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version 3.10 sal-detectron2==0.7.2 -d "$tmp"
  whl=$(ls "$tmp"/sal_detectron2-0.7.2-*.whl)
  mv "$whl" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  pipi --no-deps "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  rm -rf "$tmp"
fi

echo "[install] hrnext_d2 (editable)"
pipi --no-deps --no-build-isolation -e .
"$PY" -c "import detectron2, hrnext_d2, torch; print('[install] ok: torch', torch.__version__, '| detectron2', detectron2.__version__)"
