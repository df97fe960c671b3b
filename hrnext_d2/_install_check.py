"""Warns when `import hrnext_d2` is served by another copy than the clone one works in.

An editable install points at one clone. A script run from a second clone
(`python3 tools/train_net.py` there puts `tools/` first on sys.path, not the clone) then imports the
first clone's code without a word. This check compares the imported package with the clone that
holds the current directory or the script being run, and names both when they differ.

It only looks at a few paths (no imports beyond the standard library, no package metadata), so it
costs microseconds at import time.
"""
import os
import sys
import warnings

PACKAGE = "hrnext_d2"


class ShadowedCloneWarning(UserWarning):
    """`import hrnext_d2` found another copy than the one in the clone being run."""


def find_clone(start):
    """The nearest directory at or above `start` that holds `setup.py` and `hrnext_d2/__init__.py`
    (a clone of this project), or None."""
    d = os.path.abspath(start)
    while True:
        if os.path.isfile(os.path.join(d, PACKAGE, "__init__.py")) and os.path.isfile(os.path.join(d, "setup.py")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def shadowed_clone_message(package_dir, starts):
    """A message when a clone holding one of `starts` (directories or files) has a `hrnext_d2`
    package other than `package_dir`, the one imported; None when they agree or no clone is found."""
    imported = os.path.realpath(package_dir)
    for start in starts:
        if not start:
            continue
        if os.path.isfile(start):
            start = os.path.dirname(start)
        clone = find_clone(start)
        if clone is None:
            continue
        local = os.path.realpath(os.path.join(clone, PACKAGE))
        if local != imported:
            return (
                f"hrnext_d2 is imported from {imported}, not from the clone you are running in "
                f"({local}): this Python's hrnext_d2 install points at another copy. To use this "
                f"clone, run `bash tools/install.sh` (or `pip install -e .`) in {clone}. "
                f"Check with: python3 -c \"import hrnext_d2; print(hrnext_d2.__file__)\""
            )
    return None


def _script():
    """The script being run, unless there is none (`-c`, the prompt) or it belongs to the Python
    environment itself (`python -m pytest`: a venv may well lie inside a clone)."""
    script = sys.argv[0] if sys.argv else ""
    if script in ("", "-c", "-m"):
        return None
    script = os.path.abspath(script)
    for prefix in {sys.prefix, sys.base_prefix}:
        if script.startswith(os.path.join(os.path.abspath(prefix), "")):
            return None
    return script


def warn_if_shadowed(package_dir):
    """Warns when the imported package is not the one of the clone that holds the script being
    run or the current directory. Silent in multiprocessing workers: their parent warned."""
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        return
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was deleted
        cwd = None
    message = shadowed_clone_message(package_dir, [_script(), cwd])
    if message:
        warnings.warn(message, ShadowedCloneWarning, stacklevel=2)
