"""Shared fixtures and the CI rule for test tiers (STYLE.md, "Tests and
experiments"): `unit` tests run anywhere; `integration` tests need root,
and in CI (CI=true) a skipped integration test is a failure, so a missing
capability cannot quietly turn the tier green."""
from __future__ import annotations

import os

import pytest


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and _in_ci() and item.get_closest_marker("integration") is not None
            and not hasattr(report, "wasxfail")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"integration test skipped in CI (CI=true): {reason}"


@pytest.fixture
def dp_factory():
    """Builds `datapath.Datapath` objects (same arguments) and closes every
    one of them after the test, also when the test fails while running."""
    from datapath import Datapath

    made = []

    def make(*args, **kwargs):
        dp = Datapath(*args, **kwargs)
        made.append(dp)
        return dp

    yield make
    for dp in made:
        dp.close()  # dp_destroy stops the loop first
