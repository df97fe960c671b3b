#!/usr/bin/env bash
# Installs hrnext_d2 and everything it needs into the current Python environment: the active
# virtual environment or conda environment, else the Python that `python3` (or $PYTHON) names.
#
# - build tools: setuptools>=70.1,<81. A new venv ships setuptools 65 without `wheel`, which cannot
#   build the editable install ("invalid command 'bdist_wheel'"); 70.1 and newer build wheels on
#   their own. Detectron2 still imports pkg_resources, which setuptools 84 no longer has (its
#   deprecation warning asks for setuptools<81), hence <81.
# - torch / torchvision: kept when already importable, else torch==2.14.1 torchvision==0.29.1.
# - detectron2: kept when already importable (e.g. built from source), else the registry wheel
#   sal-detectron2==0.7.2 (upstream detectron2 a59f0563). That wheel is tagged cp310 but is pure
#   Python apart from an optional `_C` extension, so it is installed under a py3 tag.
# - detectron2's runtime dependencies, pinned where newer releases break it (numpy<2 above all),
#   and onnx / onnxruntime for model export, resolved in the same call so that they keep numpy<2.
# - this package, editable. The install points at this clone: run the script in another clone to
#   switch to that one.
#
# HRNEXT_EXTRAS=bench also installs timm, which only benchmark comparisons need.
set -euo pipefail
# The interpreter by absolute path, so that a relative $PYTHON keeps working after the cd below.
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
cd "$(dirname "$0")/.."
pipi() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
say() { echo "[install ${SECONDS}s] $*"; }

extras=()
requested=${HRNEXT_EXTRAS:-}
for extra in ${requested//,/ }; do
  case "$extra" in
    bench) extras+=("timm") ;;
    *) echo "[install] unknown HRNEXT_EXTRAS entry: $extra (known: bench)" >&2; exit 2 ;;
  esac
done

say "into $("$PY" -c 'import sys; print(sys.prefix)') (Python $("$PY" -c 'import platform; print(platform.python_version())'))"

# An operating system's own Python (Debian, Ubuntu, Fedora...) refuses pip installs (PEP 668).
if [[ -z "${PIP_BREAK_SYSTEM_PACKAGES:-}" ]] && "$PY" -c 'import os, sys, sysconfig
sys.exit(not (sys.prefix == sys.base_prefix
              and os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))'; then
  echo "[install] $PY is managed by the operating system, which does not let pip install into it." >&2
  echo "[install] Make a virtual environment first: python3 -m venv .venv && . .venv/bin/activate && bash tools/install.sh" >&2
  exit 1
fi

say "build tools"
pipi "setuptools>=70.1,<81"

if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  say "torch==2.14.1 torchvision==0.29.1"
  pipi torch==2.14.1 torchvision==0.29.1
fi

say "detectron2 runtime dependencies, onnx, onnxruntime${extras:+, ${extras[*]}}"
pipi "numpy<2" "opencv-python-headless<4.11" "setuptools>=70.1,<81" fvcore iopath pycocotools \
  omegaconf hydra-core yacs termcolor tabulate cloudpickle tqdm tensorboard matplotlib Pillow pytest \
  "onnx>=1.16,<1.24" "onnxruntime>=1.18,<1.33" ${extras[@]+"${extras[@]}"}

# xtcocotools has Linux wheels up to Python 3.11 only. Elsewhere pip builds its source release, whose
# setup.py imports numpy and Cython without declaring them, so it is built in this environment
# (against its numpy<2; needs a C compiler and the Python headers).
if ! "$PY" -c "import xtcocotools" 2>/dev/null; then
  say "xtcocotools"
  if ! pipi --only-binary=xtcocotools "numpy<2" xtcocotools 2>/dev/null; then
    say "xtcocotools: no wheel for this Python, building it from source"
    pipi "numpy<2" cython "setuptools>=70.1,<81"
    pipi --no-build-isolation "numpy<2" xtcocotools
  fi
fi

if "$PY" -c "import detectron2" 2>/dev/null; then
  say "detectron2 already installed: $("$PY" -c 'import detectron2; print(detectron2.__version__, detectron2.__file__)')"
else
  say "detectron2 from the sal-detectron2==0.7.2 wheel"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version 3.10 sal-detectron2==0.7.2 -d "$tmp"
  whl=$(ls "$tmp"/sal_detectron2-0.7.2-*.whl)
  mv "$whl" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  pipi --no-deps "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
fi

say "hrnext_d2 (editable: $(pwd))"
pipi --no-deps --no-build-isolation -e .
# Checked from outside the clone, so that it is the install that is imported, not the work tree.
versions=$(cd / && "$PY" -c "import detectron2, hrnext_d2, onnxruntime, torch; print('torch', torch.__version__, '| detectron2', detectron2.__version__, '| onnxruntime', onnxruntime.__version__, '| hrnext_d2', hrnext_d2.__file__)")
say "ok: $versions"
