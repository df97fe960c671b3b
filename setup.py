"""Installs the hrnext_d2 package (HRNeXt for Detectron2).

Detectron2 itself is not on PyPI: `tools/install.sh` installs it (or keeps the one already present)
before this package.
"""
from setuptools import find_packages, setup

setup(
    name="hrnext_d2",
    version="0.1.0",
    description="HRNeXt (High-Resolution Context Network) top-down pose estimation for Detectron2",
    packages=find_packages(include=["hrnext_d2", "hrnext_d2.*"]),
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
    extras_require={"test": ["pytest"]},
)
