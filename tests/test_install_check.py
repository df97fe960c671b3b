"""`import hrnext_d2` warns when it is served by another copy than the clone being run (an editable
install left pointing at a first clone while one works in a second)."""
import os
import subprocess
import sys

from hrnext_d2._install_check import find_clone, shadowed_clone_message
from tests.conftest import REPO_ROOT

IMPORTED = str(REPO_ROOT / "hrnext_d2")


def _fake_clone(root):
    """A directory laid out like a clone: setup.py, hrnext_d2/__init__.py, tools/."""
    (root / "hrnext_d2").mkdir(parents=True)
    (root / "hrnext_d2" / "__init__.py").write_text("raise ImportError('the fake clone was imported')\n")
    (root / "setup.py").write_text("")
    (root / "tools").mkdir()
    return root


def test_find_clone_walks_up_to_the_clone_root(tmp_path):
    clone = _fake_clone(tmp_path / "clone")
    assert find_clone(clone / "tools") == str(clone)
    assert find_clone(clone / "hrnext_d2") == str(clone)
    assert find_clone(tmp_path) is None


def test_no_message_in_the_imported_clone_or_outside_any_clone(tmp_path):
    assert shadowed_clone_message(IMPORTED, [str(REPO_ROOT / "tools" / "train_net.py"), str(REPO_ROOT)]) is None
    assert shadowed_clone_message(IMPORTED, [str(REPO_ROOT / "configs")]) is None
    assert shadowed_clone_message(IMPORTED, [None, str(tmp_path)]) is None


def test_no_message_when_the_clone_is_reached_through_a_symlink(tmp_path):
    link = tmp_path / "link"
    os.symlink(REPO_ROOT, link)
    assert shadowed_clone_message(IMPORTED, [str(link / "tools")]) is None


def test_message_names_both_copies_and_the_fix(tmp_path):
    clone = _fake_clone(tmp_path / "second")
    for starts in ([str(clone / "tools" / "train_net.py"), None], [None, str(clone / "tools")],
                   [str(REPO_ROOT / "tools"), str(clone)]):
        msg = shadowed_clone_message(IMPORTED, starts)
        assert msg is not None, starts
        assert os.path.realpath(IMPORTED) in msg
        assert os.path.realpath(clone / "hrnext_d2") in msg
        assert "bash tools/install.sh" in msg and "pip install -e ." in msg


def _import_in_subprocess(args, cwd):
    """Runs Python with this clone's package first on the import path (as an install of it would
    serve it) and returns stderr."""
    env = dict(os.environ, PYTHONWARNINGS="default")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, proc.stderr


def test_import_warns_for_a_script_of_another_clone_and_not_in_its_own(tmp_path):
    clone = _fake_clone(tmp_path / "second")
    script = clone / "tools" / "show.py"
    script.write_text("import hrnext_d2\nprint(hrnext_d2.__file__)\n")
    # `python3 tools/show.py` in the second clone: sys.path[0] is its tools/, so the package comes
    # from the install (here: this clone) and the second clone's code is silently not used.
    out, err = _import_in_subprocess(["tools/show.py"], cwd=clone)
    assert out.strip() == str(REPO_ROOT / "hrnext_d2" / "__init__.py")
    assert "ShadowedCloneWarning" in err, err[-4000:]
    assert f"not from the clone you are running in ({os.path.realpath(clone / 'hrnext_d2')})" in err
    # The same import from inside this clone is quiet.
    out, err = _import_in_subprocess(["-c", "import hrnext_d2; print(hrnext_d2.__file__)"], cwd=REPO_ROOT / "tools")
    assert out.strip() == str(REPO_ROOT / "hrnext_d2" / "__init__.py")
    assert "ShadowedCloneWarning" not in err, err[-4000:]
