"""Shared test helpers: the location of ../shared (fixtures and golden data)."""
import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: the distributed tests run several processes on
# two cores, where spinning threads slow every step many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRNEXT_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared; skips the calling test with a clear message when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared test data not found: {p} (set HRNEXT_SHARED to the folder holding fixtures/ and golden/)")
    return p


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(2)
    yield


def tool_env(**extra: str) -> dict:
    """Environment for running a tool of this clone in a subprocess: this clone's package first on
    the path (not whichever clone was installed last), plus `extra`."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env
