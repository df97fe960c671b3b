"""docs/reliability.md: every row of its tables names at least one test, and every test named exists."""
import re

from tests.conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "reliability.md"
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows():
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) == 3 and cells[0] not in ("bad input or fault", "---"):
            yield cells


def test_every_row_names_existing_tests():
    rows = list(_rows())
    assert len(rows) >= 25
    for fault, outcome, tests in rows:
        refs = TEST_REF.findall(tests)
        assert refs, f"no test named for: {fault}"
        assert outcome, f"no outcome for: {fault}"
        for path, name in refs:
            source = (REPO_ROOT / path).read_text()
            assert re.search(rf"^def {name}\(", source, flags=re.M), f"{path}::{name} (row: {fault})"
