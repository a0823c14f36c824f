"""Static checks of the Dockerfile (no Docker daemon needed): a slim multi-stage build whose
final stage carries no build tools, runs as a non-root uid and starts the console script, and
which agrees with pyproject.toml and the Helm chart's defaults."""

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


def test_multi_stage_on_slim_python() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        assert stage.base == "python:3.11-slim", stage.base
    final = all_stages[-1]
    copied = [c for c in final.all("COPY") if c.startswith("--from=")]
    assert copied, "the final stage must take the installed package from the builder"
    assert all(c.split()[0] == f"--from={all_stages[0].name}" for c in copied)


def test_builder_builds_wheels_and_installs_the_package() -> None:
    builder = stages()[0]
    runs = " ".join(builder.all("RUN"))
    assert re.search(r"pip wheel\b", runs)
    assert re.search(r"pip install\b.*\bpaxos-gateway\b", runs)


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
