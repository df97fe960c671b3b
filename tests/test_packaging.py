"""A wheel of the package (`pip wheel --no-deps .`, a non-editable install) carries what the package
reads at run time besides its Python modules: the C sources of the CPU kernels."""
import subprocess
import sys
import zipfile

from tests.conftest import REPO_ROOT


def test_wheel_carries_the_cpu_kernel_sources(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("hrnext_d2-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "hrnext_d2/modeling/layers/csrc").glob("*.c")}
    assert {"hrnext_d2/modeling/layers/csrc/depthwise_nhwc.c"} <= sources
    assert sources <= names, sorted(sources - names)
    assert "hrnext_d2/modeling/layers/depthwise_nhwc.py" in names
