"""Fixtures shared by the alert suites (``test_alerts``, ``test_alerts_cluster``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.test_alerts import _promtool
from tests.deploy.test_helm import CHART_DIR, helm


@pytest.fixture(scope="module")
def promtool() -> str:
    return _promtool()


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded
