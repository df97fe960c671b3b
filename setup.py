"""Installs the hrnext_d2 package (HRNeXt for Detectron2).

Detectron2 itself is not on PyPI: `tools/install.sh` installs it (or keeps the one already present)
before this package. With detectron2 present, `pip install -e .[test]` (or a wheel built with
`pip wheel --no-deps .`) installs this package and the rest on its own. Extras: `test` (pytest),
`export` (onnx, onnxruntime), `bench` (timm).
"""
from setuptools import find_packages, setup

setup(
    name="hrnext_d2",
    version="0.1.0",
    description="HRNeXt (High-Resolution Context Network) top-down pose estimation for Detectron2",
    packages=find_packages(include=["hrnext_d2", "hrnext_d2.*"]),
    # The CPU kernels' C sources, compiled on first use (hrnext_d2/modeling/layers/depthwise_nhwc.py).
    package_data={"hrnext_d2.modeling.layers": ["csrc/*.c"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "numpy<2",
        "opencv-python-headless<4.11",
        "fvcore",
        "iopath",
        "pycocotools",
        "xtcocotools",
        "setuptools<81",
        "onnx",
        "onnxruntime",
    ],
    extras_require={
        "test": ["pytest"],
        "export": ["onnx>=1.16,<1.24", "onnxruntime>=1.18,<1.33"],
        "bench": ["timm"],
    },
)
