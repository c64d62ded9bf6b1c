"""The conftest rule that a skipped integration test fails in CI, checked by
running a tiny suite with this directory's conftest in a subprocess."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

CONFTEST = pathlib.Path(__file__).with_name("conftest.py")

SUITE = '''
import pytest

@pytest.mark.integration
def test_needs_root_skipped():
    pytest.skip("no root")

@pytest.mark.integration
@pytest.mark.skip(reason="no netns")
def test_needs_netns_marked_skip():
    pass

@pytest.mark.unit
def test_unit_skipped():
    pytest.skip("optional tool missing")

@pytest.mark.integration
def test_integration_passes():
    pass
'''


def _run(tmp_path: pathlib.Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_tiers.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    unit: u\n    integration: i\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_skipped_integration_fails_in_ci(tmp_path):
    r = _run(tmp_path, "true")
    assert r.returncode == 1, r.stdout
    assert "FAILED test_tiers.py::test_needs_root_skipped" in r.stdout
    # a skip marker acts at set-up, so pytest reports that failure as an error
    assert "ERROR test_tiers.py::test_needs_netns_marked_skip" in r.stdout
    # a skipped unit test stays a skip, a passing integration test a pass
    assert "optional tool missing" in r.stdout and "in CI (CI=true): optional" not in r.stdout
    assert "PASSED test_tiers.py::test_integration_passes" in r.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 error" in r.stdout


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_skipped_integration_is_a_skip_outside_ci(tmp_path, ci):
    r = _run(tmp_path, ci)
    assert r.returncode == 0, r.stdout
    assert "1 passed, 3 skipped" in r.stdout
