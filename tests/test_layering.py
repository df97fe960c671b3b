"""The package's layers, checked on its source: the numerics package imports nothing else of the
project (and torch only in `crops`), the data layer never imports the model, and every "quirk N" a
docstring or comment cites is explained in docs/mmpose_quirks.md."""
import ast
import re
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "hrnext_d2"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """Absolute names of every module imported by `path` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]  # `from . import geometry` imports a module
    return out


def _package_files(sub: str):
    return sorted((PACKAGE / sub).rglob("*.py"))


def test_numerics_import_nothing_of_the_project_and_torch_only_for_crops():
    allowed_third_party = {"numpy", "cv2", "torch"}
    files = _package_files("topdown")
    assert files, "hrnext_d2/topdown is missing"
    for path in files:
        for mod in _imports(path):
            top = mod.split(".")[0]
            if top == "hrnext_d2":
                assert mod.startswith("hrnext_d2.topdown"), f"{path.name} imports {mod}"
            elif top not in allowed_third_party:
                assert top in ("typing", "dataclasses", "math", "__future__", "collections"), f"{path.name} imports {mod}"
            if top == "torch" and path.name not in ("crops.py",):
                # codec.flip_back imports torch lazily, only when it is given a tensor
                src = path.read_text()
                assert "import torch  # lazy" in src, f"{path.name} imports torch at module level"


def test_data_layer_does_not_import_the_model():
    for path in _package_files("data"):
        for mod in _imports(path):
            assert not mod.startswith(("hrnext_d2.modeling", "hrnext_d2.engine", "hrnext_d2.evaluation")), (
                f"{path.relative_to(REPO_ROOT)} imports {mod}"
            )


def test_evaluation_does_not_import_the_model():
    for path in _package_files("evaluation"):
        for mod in _imports(path):
            assert not mod.startswith(("hrnext_d2.modeling", "hrnext_d2.engine")), f"{path.name} imports {mod}"


def test_every_cited_quirk_is_documented():
    doc = (REPO_ROOT / "docs" / "mmpose_quirks.md").read_text()
    documented = {int(n) for n in re.findall(r"^\s*(\d+)\. \*\*", doc, flags=re.M)}
    assert documented == set(range(1, 21))
    cited = set()
    for path in PACKAGE.rglob("*.py"):
        for m in re.finditer(r"quirks? (\d+)(?:-(\d+))?", path.read_text()):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            cited.update(range(lo, hi + 1))
    assert cited and cited <= documented, sorted(cited - documented)
    # each module that cites quirks says where they are explained
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if re.search(r"quirks? \d", text):
            assert "docs/mmpose_quirks.md" in text, path


def test_onnx_runtime_side_imports_no_torch():
    """The exported model's runtime (hrnext_d2.export minus the exporter) imports numpy, onnxruntime
    and the numerics only; tests/export/test_onnx_pipeline.py runs it with torch unimportable."""
    runtime = [PACKAGE / "export" / name for name in ("__init__.py", "metadata.py", "onnx_pipeline.py")]
    allowed = ("hrnext_d2.topdown", "hrnext_d2.export.metadata", "hrnext_d2.export.onnx_pipeline")
    for path in runtime:
        for mod in _imports(path):
            top = mod.split(".")[0]
            if top == "hrnext_d2":
                assert mod.startswith(allowed), f"{path.name} imports {mod}"
            else:
                assert top in ("numpy", "cv2", "onnxruntime", "json", "logging", "pathlib", "typing", "dataclasses"), (
                    f"{path.name} imports {mod}"
                )
