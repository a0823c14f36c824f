"""The sans-IO boundary: nothing under ``gateway/contract``, ``gateway/ingest``,
``gateway/fanout`` or ``gateway/cluster`` may load trio, trio-websocket, prometheus_client,
nats (nats-py), httpx or anyio; those belong to ``gateway/io`` (and the composition root).
Each module is imported alone in a fresh interpreter, because this test process already has
trio loaded by pytest-trio, and a module that is clean alone can still be dirty through what it
imports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gateway

SANS_IO_PACKAGES = ("contract", "ingest", "fanout", "cluster")
FORBIDDEN = ("trio", "trio_websocket", "prometheus_client", "nats", "httpx", "anyio")


def _sans_io_modules() -> list[str]:
    root = Path(gateway.__file__).parent
    names = []
    for package in SANS_IO_PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            stem = path.stem
            names.append(f"gateway.{package}" + ("" if stem == "__init__" else f".{stem}"))
    return names


MODULES = _sans_io_modules()


def test_the_boundary_covers_the_sans_io_packages() -> None:
    # A glob that silently found nothing would make every case below vacuous.
    for expected in (
        "gateway.contract.records",
        "gateway.ingest.wsclient",
        "gateway.fanout.hub",
        "gateway.cluster.lease",
    ):
        assert expected in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_loads_no_io_library(module: str) -> None:
    code = f"import sys, {module}\nprint(' '.join(n for n in {FORBIDDEN!r} if n in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"{module} loads {done.stdout.strip()}"
