"""The sans-IO boundary: nothing under ``gateway/contract``, ``gateway/ingest``, ``gateway/fanout``,
``gateway/cluster``, ``gateway/retry`` or ``gateway/client`` (but the client's two adapters, which
are its I/O) may load trio, trio-websocket, websockets, prometheus_client, nats (nats-py), httpx or
anyio; those belong to ``gateway/io``, the client's adapters and the composition root. Each module
is imported alone in a fresh interpreter, because this test process already has trio loaded by
pytest-trio, and a module that is clean alone can still be dirty through what it imports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gateway

SANS_IO_PACKAGES = ("contract", "ingest", "fanout", "cluster", "retry", "client")
# The client library's adapters run its sans-IO core on an event loop's WebSocket library.
IO_ADAPTERS = ("gateway.client.asyncio_client", "gateway.client.trio_client")
FORBIDDEN = (
    "trio", "trio_websocket", "websockets", "prometheus_client", "nats", "httpx", "anyio",
)  # fmt: skip


def _sans_io_modules() -> list[str]:
    root = Path(gateway.__file__).parent
    names = []
    for package in SANS_IO_PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            stem = path.stem
            name = f"gateway.{package}" + ("" if stem == "__init__" else f".{stem}")
            if name not in IO_ADAPTERS:
                names.append(name)
    return names


MODULES = _sans_io_modules()


def test_the_boundary_covers_the_sans_io_packages() -> None:
    # A glob that silently found nothing would make every case below vacuous.
    for expected in (
        "gateway.contract.records",
        "gateway.ingest.wsclient",
        "gateway.fanout.hub",
        "gateway.cluster.lease",
        "gateway.retry.backoff",
        "gateway.client.session",
        "gateway.client.driver",
    ):
        assert expected in MODULES
    # Each excluded adapter must exist, or the exclusion hides nothing and says something false.
    root = Path(gateway.__file__).parent
    for adapter in IO_ADAPTERS:
        assert (root.parent / (adapter.replace(".", "/") + ".py")).is_file(), adapter


@pytest.mark.parametrize("module", MODULES)
def test_module_loads_no_io_library(module: str) -> None:
    code = f"import sys, {module}\nprint(' '.join(n for n in {FORBIDDEN!r} if n in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"{module} loads {done.stdout.strip()}"


def test_the_bench_imports_nothing_from_tests() -> None:
    """The benchmark stands on its own: tests may use bench helpers, never the reverse."""
    bench = Path(gateway.__file__).parent.parent / "bench"
    offenders = [
        f"{path.relative_to(bench.parent)}:{n}"
        for path in sorted(bench.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.lstrip().startswith(("from tests", "import tests"))
    ]
    assert offenders == []
