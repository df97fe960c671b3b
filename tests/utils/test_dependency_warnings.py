"""A quiet start: `import hrnext_d2` and the tools print no dependency warnings, while a user's own
code still sees every warning and errors still show."""
import subprocess
import sys
import warnings

import pytest

from hrnext_d2.utils.dependency_warnings import (
    KNOWN_IMPORT_WARNINGS,
    ignoring_known_dependency_warnings,
)
from tests.conftest import REPO_ROOT, tool_env

# The same warnings without our filters: what a plain `import detectron2.modeling` prints.
FRESH_IMPORT = "import detectron2.modeling, detectron2.model_zoo"


def _python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=timeout,
    )


def test_filters_match_message_category_and_module():
    """Only the known warning is ignored: the same message from user code, or in another category, shows."""
    for known in KNOWN_IMPORT_WARNINGS:
        message, module = known.message.replace("\\", ""), known.module.replace("\\", "")
        other = UserWarning if known.category is FutureWarning else FutureWarning
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with ignoring_known_dependency_warnings():
                warnings.warn_explicit(message + " (detail)", known.category, "dep.py", 1, module=module)
                warnings.warn_explicit(message, known.category, "user.py", 1, module="__main__")
                warnings.warn_explicit(message, other, "dep.py", 1, module=module)
            warnings.warn_explicit(message, known.category, "dep.py", 2, module=module)  # after the block
        assert [(w.filename, w.lineno) for w in caught] == [("user.py", 1), ("dep.py", 1), ("dep.py", 2)]


@pytest.mark.slow
def test_import_is_quiet_and_leaves_user_warnings_alone():
    code = (
        "import sys, warnings; before = list(warnings.filters)\n"
        "import hrnext_d2\n"
        "assert warnings.filters == before, 'import hrnext_d2 changed the warning filters'\n"
        "sys.stderr.write('IMPORTED\\n'); sys.stderr.flush()\n"
        "import torch; torch.jit.script(torch.nn.ReLU())\n"  # a user's own deprecated call still warns
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = proc.stderr.split("IMPORTED\n")
    assert before == "", before
    assert "FutureWarning" in after and "torch.jit.script" in after
    # without hrnext_d2's import the same dependencies do warn (the test above can fail)
    plain = _python(FRESH_IMPORT)
    assert "FutureWarning" in plain.stderr and "pkg_resources" in plain.stderr


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["demo.py", "train_net.py", "benchmark.py", "convert_mmpose_checkpoint.py"])
def test_tools_start_quietly(tool):
    proc = _python("", str(REPO_ROOT / "tools" / tool), "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""


@pytest.mark.slow
def test_errors_still_show(tmp_path):
    proc = _python("", str(REPO_ROOT / "tools" / "demo.py"), "--config-file", str(tmp_path / "nope.yaml"), "--input", "x.jpg")
    assert proc.returncode != 0
    assert "nope.yaml" in proc.stderr and "FileNotFoundError" in proc.stderr
    assert "Warning" not in proc.stderr
