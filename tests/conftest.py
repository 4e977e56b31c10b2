"""Test-wide settings: never touch the HuggingFace hub; in CI a skipped real-model test is a failure
(the real model is a declared CI dependency, so a skip would hide a broken install)."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))  # `from tiny import ...`


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and item.get_closest_marker("real") is not None:
        report.outcome = "failed"
        report.longrepr = f"real-model test skipped in CI: {report.longrepr}"
