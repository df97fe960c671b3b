#!/usr/bin/env python3
"""tools/demo.py with the body13 datasets registered, so the model finds its flip pairs and sigmas
and the drawing its names and skeleton (same arguments as tools/demo.py):

    python3 projects/custom_keypoints/demo.py --config-file projects/custom_keypoints/configs/hrnext_small_body13.yaml \
        --input images/ --output out/ --opts MODEL.WEIGHTS output/custom_keypoints/hrnext_small_body13/model_final.pth
"""
import importlib.util
import os

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings.
import hrnext_d2  # noqa: F401,I001

import body13  # noqa: F401  (registers body13_train / body13_val)

TOOLS_DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "demo.py")


def _load_demo():
    """tools/demo.py as a module (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("hrnext_tools_demo", TOOLS_DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    _load_demo().main()
