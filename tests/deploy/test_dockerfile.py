"""Static checks of the Dockerfile (no Docker daemon needed): a slim multi-stage build on a
base pinned by digest, dependencies installed from the lock with their hashes, a final stage
that carries no build tools, runs as a non-root uid and starts the console script with a
default configuration that listens on all interfaces; and it agrees with pyproject.toml and the
Helm chart's defaults."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
CHART_DIR = ROOT / "helm" / "paxos-gateway"

# Anything that compiles or fetches code has no place in the runtime image.
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libc6?-dev|apt-get|apt|apk|"
    r"pip\s+(install|wheel)|git|curl|wget)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [args for o, args in self.instructions if o == op]

    def last(self, op: str) -> str | None:
        found = self.all(op)
        return found[-1] if found else None


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, even inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        op, _, args = line.partition(" ")
        result.append((op.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return result


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages, with global ARG defaults substituted into FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for op, rest in instructions(text):
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        else:
            assert stages, f"{op} before the first FROM"
            stages[-1].instructions.append((op, rest))
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec (JSON) form: {args}"
    return [str(v) for v in value]


def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final_stage() -> Stage:
    return stages()[-1]


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def chart_values() -> dict[str, object]:
    values: dict[str, object] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return values


def chart_metadata() -> dict[str, object]:
    meta: dict[str, object] = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    return meta


PINNED_BASE = re.compile(r"^python:3\.11-slim@sha256:[0-9a-f]{64}$")


def test_multi_stage_on_slim_python_pinned_by_digest() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        # A tag moves; a digest names one image. Same base (and interpreter path) everywhere.
        assert PINNED_BASE.match(stage.base), stage.base
    assert len({stage.base for stage in all_stages}) == 1
    final = all_stages[-1]
    copied = [c for c in final.all("COPY") if c.startswith("--from=")]
    assert copied, "the final stage must take the installed package from the builder"
    assert all(c.split()[0] == f"--from={all_stages[0].name}" for c in copied)


def test_builder_installs_the_locked_dependencies_then_the_package() -> None:
    builder = stages()[0]
    steps = builder.instructions
    runs = builder.all("RUN")
    locked = [i for i, (op, a) in enumerate(steps) if op == "RUN" and RUNTIME_LOCK.name in a]
    assert len(locked) == 1, "one RUN installs requirements-runtime.lock"
    install = steps[locked[0]][1]
    for flag in ("--require-hashes", "--no-deps", f"-r {RUNTIME_LOCK.name}"):
        assert flag in install, f"{flag} missing: {install}"
    # The lock is copied and installed before the source, so a code change reuses the layer.
    source = next(i for i, (op, a) in enumerate(steps) if op == "COPY" and "gateway" in a)
    lock_copy = next(
        i for i, (op, a) in enumerate(steps) if op == "COPY" and RUNTIME_LOCK.name in a
    )
    assert lock_copy < locked[0] < source
    # The package without its dependencies (they came from the lock), with the locked backend.
    package = [r for r in runs if re.search(r"pip install\b.*\s\.(\s|$)", r)]
    assert len(package) == 1
    assert "--no-deps" in package[0] and "--no-build-isolation" in package[0]
    assert "--no-index" in package[0]


def _lock_entries(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of a uv/pip-compile lock file."""
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    name = ""
    for line in path.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if pin:
            name = pin.group(1).lower()
            entries[name] = (pin.group(2), frozenset())
        for digest in re.findall(r"--hash=(sha256:[0-9a-f]{64})", line):
            version, hashes = entries[name]
            entries[name] = (version, hashes | {digest})
    return entries


def test_runtime_lock_is_a_subset_of_the_lock() -> None:
    # requirements-runtime.lock is compiled with --constraint requirements.lock: every entry
    # must be the lock's own, same version and same hashes (a stale one fails here).
    full, runtime = _lock_entries(LOCK), _lock_entries(RUNTIME_LOCK)
    assert runtime, "empty runtime lock"
    for name, (version, hashes) in runtime.items():
        assert name in full, f"{name} is not in {LOCK.name}"
        assert (version, hashes) == full[name], f"{name}: differs from {LOCK.name}; re-compile"
        assert hashes, f"{name} has no hashes"
    header = RUNTIME_LOCK.read_text()
    assert "--generate-hashes" in header and "--constraint requirements.lock" in header


def test_runtime_lock_has_the_runtime_closure_and_no_test_tools() -> None:
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    runtime = set(_lock_entries(RUNTIME_LOCK))
    # The dependencies of the installed paxos-gateway, transitively, on this platform.
    todo = [Requirement(r) for r in distribution("paxos-gateway").requires or []]
    needed: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in needed:
            continue
        needed.add(name)
        todo.extend(Requirement(r) for r in distribution(req.name).requires or [])
    assert needed, "paxos-gateway declares no dependencies?"
    assert needed <= runtime, f"missing from the runtime lock: {sorted(needed - runtime)}"
    # The build backend (for --no-build-isolation), nothing from the test or bench extras.
    assert {"setuptools", "wheel"} <= runtime
    extras_only = {"pytest", "mypy", "ruff", "hypothesis", "helm-python-sdk", "matplotlib", "uv"}
    assert runtime.isdisjoint(extras_only)


def test_image_default_config_listens_on_all_interfaces() -> None:
    from gateway.config import Config, load_config

    final = final_stage()
    cmd = final.last("CMD")
    assert cmd is not None
    args = exec_form(cmd)
    config_path = args[args.index("--config") + 1]
    # The file CMD names is in the image: copied from the build context.
    copies = [shlex.split(c) for c in final.all("COPY") if not c.startswith("--from=")]
    sources = {words[-1]: words[0] for words in copies}
    assert config_path in sources, f"{config_path} is not copied into the image"
    config = load_config(ROOT / sources[config_path], env={})
    assert config.server.host == "0.0.0.0" and config.metrics.host == "0.0.0.0"
    # Otherwise the gateway's defaults: the public feeds, the chart's ports.
    defaults = Config()
    assert config.feeds == defaults.feeds and config.upstream == defaults.upstream
    assert (config.server.port, config.metrics.port) == (8765, 9108)


def test_final_stage_has_no_build_tools() -> None:
    for run in final_stage().all("RUN"):
        found = BUILD_TOOLS.search(run)
        assert found is None, f"build tool {found.group(0)!r} in the final stage: {run}"


def test_runs_as_non_root_uid_matching_the_chart() -> None:
    user = final_stage().last("USER")
    assert user is not None, "the final stage must set USER"
    uid, _, gid = user.partition(":")
    # Numeric: Kubernetes' runAsNonRoot can only verify a numeric uid.
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    values = chart_values()
    for context in ("podSecurityContext", "securityContext"):
        ctx = values[context]
        assert isinstance(ctx, dict)
        assert ctx["runAsUser"] == int(uid)
        assert ctx["runAsNonRoot"] is True


def test_entrypoint_is_the_console_script() -> None:
    final = final_stage()
    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint is not None
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert exec_form(entrypoint) == ["paxos-gateway"]
    assert "paxos-gateway" in project["scripts"]
    cmd = final.last("CMD")
    assert cmd is not None
    assert exec_form(cmd) == ["run", "--config", "/etc/paxos-gateway/gateway.toml"]
    assert not [e for e in final.all("ENV") if "PAXOS_GATEWAY__" in e], (
        "settings in ENV would override the chart's config file (environment beats the file)"
    )


def test_exposes_the_chart_ports() -> None:
    exposed: set[int] = set()
    for expose in final_stage().all("EXPOSE"):
        exposed |= {int(p.split("/")[0]) for p in expose.split()}
    config = chart_values()["config"]
    assert isinstance(config, dict)
    assert exposed == {config["server"]["port"], config["metrics"]["port"]} == {8765, 9108}


def test_versions_agree_with_pyproject_and_chart() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    version = project["version"]
    meta = chart_metadata()
    assert meta["appVersion"] == version
    image = chart_values()["image"]
    assert isinstance(image, dict)
    assert image["repository"] == project["name"] == "paxos-gateway"
    assert image["tag"] in ("", version)  # "" means the chart's appVersion
    label_default = [a for op, a in instructions(DOCKERFILE.read_text()) if op == "ARG"]
    assert f"VERSION={version}" in label_default


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "deny everything first (.venv, .git, caches never reach the daemon)"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for stage in stages():
        for copy in stage.all("COPY"):
            words = shlex.split(copy)
            if any(w.startswith("--from=") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            copied |= {s.rstrip("/") for s in sources}
    assert copied == allowed
    for path in copied:
        assert (ROOT / path).exists(), f"{path} is copied into the image but does not exist"
