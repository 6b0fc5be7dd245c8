"""Every command of the README and the documentation site is run by CI.

The ```bash fences of README.md and docs/**/*.md are parsed (``\\`` continuations joined, comments
and blank lines skipped) and every command is classified by the explicit rules below. A command
no rule knows fails the fast test with its page and line, so a page cannot gain a command that CI
does not run. (```console fences hold what cannot run here: Docker, Kubernetes, a maintainer's
command that rewrites committed files.) The slow test runs each page's commands, in order, in a
scratch copy of the working tree whose champion the README's own ``make run`` trained:

- ``make install|lint|docs|test|test-slow`` and ``bash .ci/run``: ``.ci/run`` runs them (checked
  here, never run again: that would recurse).
- ``make run``: run once per session, by the ``scratch`` fixture.
- servers (``make ui``, ``stroke serve``, ...): started in their own process group, on a free port
  where the command takes one (else on the documented port, which must be free), until an HTTP GET
  answers; the page's ``curl`` commands to one run while it is up, then the group is terminated.
- benchmarks: minutes each, run by hand by design (docs/benchmarks.md); CI runs each with
  ``--help`` (they all use argparse), which also checks the options the page passes exist.
- everything else: bash with ``set -euo pipefail``, block by block, in the scratch copy; the
  variables a block exports carry to the page's next blocks, as in one shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _dagster import kill_all

from stroke_dagster.core.settings import PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]
CI_SCRIPT = PROJECT_ROOT / ".ci" / "run"
VENV = Path(sys.prefix)  # the project's .venv, which runs the tests
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")


# ------------------------------------------------------------------------------------ the pages
@dataclass(frozen=True)
class Command:
    """One command of a ```bash fence: its page, first line, fence number and text."""

    page: Path
    line: int
    block: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(PROJECT_ROOT)}:{self.line}"


def parse_commands(page: Path, text: str | None = None) -> list[Command]:
    """The commands of the page's ```bash fences, in page order."""
    lines = (page.read_text(encoding="utf-8") if text is None else text).splitlines()
    commands: list[Command] = []
    fence: str | None = None  # the opening marker of the fence we are in
    language = ""
    block = -1
    pending: tuple[int, str] | None = None  # a command continued with "\"
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if fence is None:
            if match := FENCE.match(line):
                fence, language, block = match.group(1), match.group(2), block + 1
            continue
        if stripped.startswith(fence) and not stripped.strip(fence[0]):
            if pending is not None:
                raise ValueError(f"{page}:{pending[0]}: the fence closes after a '\\'")
            fence = None
            continue
        if language != "bash":
            continue
        if pending is None and (not stripped or stripped.startswith("#")):
            continue
        start, head = pending if pending is not None else (number, "")
        joined = f"{head} {stripped}".strip()
        if joined.endswith("\\"):
            pending = (start, joined[:-1].rstrip())
            continue
        pending = None
        commands.append(Command(page, start, block, joined))
    if fence is not None:
        raise ValueError(f"{page}: a ``` fence is never closed")
    return commands


def all_commands() -> list[Command]:
    return [command for page in PAGES for command in parse_commands(page)]


def program(text: str) -> str:
    """What the rules match: the command's words without leading ``NAME=value`` assignments and
    trailing comments, joined by single spaces."""
    words = shlex.split(text, comments=True)
    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
        words.pop(0)
    return " ".join(words)


# ------------------------------------------------------------------------------------ the rules
@dataclass(frozen=True)
class ServerRule:
    """A long-running command: where it listens and what answers once it is up."""

    pattern: re.Pattern[str]
    health: str  # the path an HTTP GET answers with 200 once the server is up
    port: int  # the documented port (a ``port_flag`` in the command documents another)
    port_flag: str | None = None  # the command's port option: a free port replaces (or adds) it
    port_env: str | None = None  # else the variable that moves the port
    dagster: bool = False  # a Dagster instance's processes, stopped with every straggler
    prints_exports: bool = False  # prints ``export NAME=value`` lines for the next commands


# The Makefile's servers and the commands they run.
SERVERS = (
    ServerRule(re.compile(r"make ui"), "/server_info", 3000, None, "DAGSTER_CLI_DEV_PORT", True),
    ServerRule(
        re.compile(r"(\.venv/bin/)?dagster dev( .*)?"),
        "/server_info",
        3000,
        "-p|--port",
        None,
        True,
    ),
    ServerRule(re.compile(r"make serve"), "/ready", 8080),
    ServerRule(re.compile(r"\.venv/bin/stroke serve( .*)?"), "/ready", 8080, "--port"),
    ServerRule(re.compile(r"make mlflow-ui"), "/health", 5000),
    # PostgreSQL, S3, MLflow and Dask for a demo (docs/production.md): ready when it prints the
    # variables to export; the MLflow server of MLFLOW_TRACKING_URI answers /health.
    ServerRule(re.compile(r"make prod-services"), "/health", 0, prints_exports=True),
)
CI_RUNS = re.compile(r"make (install|lint|docs|test|test-slow)|bash \.ci/run")
BENCHMARK = re.compile(r"\.venv/bin/python benchmarks/\w+\.py( .*)?")
CLIENT = re.compile(r"curl .*\b(?:localhost|127\.0\.0\.1):(\d+)\b.*")  # needs the page's server
RUN = re.compile(
    r"\.venv/bin/stroke \S.*"
    r"|\.venv/bin/dagster (asset|job|instance) .*"
    r"|make (instance|instance-production)"
    r"|(cp|mv|ls|cat|head|tail|mkdir|echo|export|test|gzip|wc) .*"
)
# Commands that need a server the page starts in its prose first, not in a fence.
REQUIRES = {"make instance-production": "make prod-services"}


def classify(command: Command) -> tuple[str, ServerRule | None]:
    """``ci``, ``trained``, ``server``, ``benchmark``, ``client``, ``run`` or ``unknown``."""
    try:
        words = program(command.text)
    except ValueError:  # unbalanced quotes
        return "unknown", None
    if CI_RUNS.fullmatch(words):
        return "ci", None
    if words == "make run":
        return "trained", None
    for rule in SERVERS:
        if rule.pattern.fullmatch(words):
            return "server", rule
    for kind, pattern in (("benchmark", BENCHMARK), ("client", CLIENT), ("run", RUN)):
        if pattern.fullmatch(words):
            return kind, None
    return "unknown", None


def ci_runs(command: Command) -> bool:
    """Whether ``.ci/run`` runs the command (``bash .ci/run``: it is ``.ci/run``)."""
    words = program(command.text)
    if words == "bash .ci/run":
        return CI_SCRIPT.is_file()
    for line in CI_SCRIPT.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):  # a line of a multi-line shell construct
            if program(line) == words:
                return True
    return False


# ----------------------------------------------------------------------------------- the tests
def test_the_parser_joins_continuations_and_reads_bash_fences_only() -> None:
    page = PROJECT_ROOT / "docs" / "example.md"
    text = (
        "Intro\n\n```bash\n# a comment\n\n.venv/bin/stroke sql \\\n  -c 'SELECT 1'\nmake run\n```\n"
        "```console\ndocker compose up\n```\n```text\nmake ui\n```\n"
    )
    got = parse_commands(page, text)
    assert [(c.line, c.block, c.text) for c in got] == [
        (6, 0, ".venv/bin/stroke sql -c 'SELECT 1'"),
        (8, 0, "make run"),
    ]
    with pytest.raises(ValueError, match="never closed"):
        parse_commands(page, "```bash\nmake run\n")


def test_every_command_of_the_pages_is_one_ci_runs() -> None:
    commands = all_commands()
    unknown = [f"{c.where}: {c.text}" for c in commands if classify(c)[0] == "unknown"]
    assert not unknown, (
        "commands no rule of tests/test_docs_commands.py runs (add a rule there, or move a "
        "command that cannot run in CI to a ```console fence):\n" + "\n".join(unknown)
    )
    texts = {c.text for c in commands}
    assert {"make run", "make test", "make ui", ".venv/bin/stroke warehouse info"} <= texts
    for command in commands:
        if classify(command)[0] == "ci":
            assert ci_runs(command), f"{command.where}: .ci/run does not run {command.text!r}"


# ------------------------------------------------------------------------------ the scratch copy
@dataclass
class Scratch:
    """A copy of the working tree with the project's venv, after the README's ``make run``."""

    root: Path
    env: dict[str, str]
    summary: dict  # make run's last line
    answered: dict[tuple, str] = field(default_factory=dict)  # servers already up once


@dataclass
class Script:
    """What a bash script of commands did."""

    returncode: int
    stdout: str
    stderr: str
    env: dict[str, str]  # the environment it ended with
    failed: int | None  # the index of the command that failed

    def report(self, commands: list[Command]) -> str:
        where = commands[self.failed] if self.failed is not None else None
        head = f"{where.where}: {where.text!r}" if where else "; ".join(c.text for c in commands)
        return (
            f"{head} exited {self.returncode}\n--- stdout ---\n{self.stdout[-2000:]}\n"
            f"--- stderr ---\n{strip_colours(self.stderr)[-3000:]}"
        )


def run_script(texts: list[str], cwd: Path, env: dict[str, str], log: Path) -> Script:
    """The commands as one bash script (``set -euo pipefail``), one per line, in their own
    process group (whatever a command leaves running is killed at the end)."""
    header = ["set -euo pipefail", "trap 'echo \"@@ failed on script line $LINENO\" >&2' ERR"]
    env_file, out_file, err_file = (log.with_suffix(s) for s in (".env", ".out", ".err"))
    script = "\n".join([*header, *texts, f"env -0 > {shlex.quote(str(env_file))}"]) + "\n"
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            process.wait(1800)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stderr = err_file.read_text(errors="replace")
    failed = re.findall(r"@@ failed on script line (\d+)", stderr)
    after = dict(env)
    if process.returncode == 0:
        pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        after = {k: v for k, v in pairs if k not in {"_", "SHLVL", "PWD", "OLDPWD"}}
    return Script(
        returncode=process.returncode,
        stdout=out_file.read_text(errors="replace"),
        stderr=stderr,
        env=after,
        failed=int(failed[-1]) - len(header) - 1 if failed else None,
    )


def strip_colours(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def tail(path: Path, chars: int = 3000) -> str:
    return strip_colours(path.read_text(errors="replace") if path.exists() else "<no log>")[-chars:]


def scratch_env(root: Path, shims: Path) -> dict[str, str]:
    """A newcomer's shell in the copy: the platform's variables unset (``STROKE_RAW_CSV`` kept
    when set, as CI sets it), state under the copy's ``data/``, the copy's code first on the path
    (as its editable install would be), and the ``make`` shim first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STROKE_", "MLFLOW_", "DAGSTER_", "AWS_", "PYTEST_"))
        # a newcomer's make is not a sub-make (CI runs this test under `make test-slow`)
        and k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")
    }
    if os.environ.get("STROKE_RAW_CSV"):
        env["STROKE_RAW_CSV"] = os.environ["STROKE_RAW_CSV"]
    env.update(
        PATH=f"{shims}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(root),
        STROKE_HOME=str(root / "data"),
        DAGSTER_HOME=str(root / "data" / "dagster"),
    )
    return env


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    """The working tree (what is being committed, uncommitted edits included) copied into tmp,
    ``.venv`` a symlink to the project's venv, then the README's ``make run``.

    ``make`` is a shim that runs ``make -o .venv/.installed``: the copy's lock file is as new as
    the copy, and ``make install`` must never re-sync the shared venv the symlink points to.
    """
    base = tmp_path_factory.mktemp("docs-commands")
    root = base / "repo"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file() or source.is_symlink():  # a deleted file is still listed
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name, follow_symlinks=False)
    (root / ".venv").symlink_to(VENV, target_is_directory=True)
    shims = base / "bin"
    shims.mkdir()
    make = shutil.which("make")
    assert make is not None
    (shims / "make").write_text(f'#!/bin/sh\nexec {make} -o .venv/.installed "$@"\n')
    (shims / "make").chmod(0o755)
    env = scratch_env(root, shims)
    (base / "logs").mkdir()
    make_run = next(c for c in parse_commands(PAGES[0]) if c.text == "make run")  # the README's
    done = run_script([make_run.text], root, env, base / "logs" / "make-run.log")
    assert done.returncode == 0, done.report([make_run])
    summary = json.loads(done.stdout.strip().splitlines()[-1])  # stroke train's last line
    assert summary["alias"] == "champion" and summary["champion_version"] == summary["version"]
    return Scratch(root=root, env=env, summary=summary)


# ---------------------------------------------------------------------------------- the servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class Server:
    """A server command running in its own process group."""

    command: Command
    rule: ServerRule
    process: subprocess.Popen
    port: int  # where it listens
    documented_port: int
    env: dict[str, str]
    log: Path
    until: int  # the index of the page's last command that needs it
    exports: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL to what is left of it after 60 s (its leader, ``make``,
        exits first: the services' own cleanup must not be cut short); then any straggler of
        its Dagster instance."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while (self.process.poll() is None or group_alive(self.process.pid)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        if self.rule.dagster:
            kill_all(Path(self.env["DAGSTER_HOME"]))


def port_option(text: str, rule: ServerRule) -> re.Match[str] | None:
    if rule.port_flag is None:
        return None
    return re.search(rf"(?:^|\s)(?:{rule.port_flag})(?:\s+|=)(\d+)\b", text)


def documented_port(command: Command, rule: ServerRule) -> int:
    """The port the page says the server listens on (its clients' URLs name it)."""
    option = port_option(command.text, rule)
    return int(option.group(1)) if option else rule.port


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is in the process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def with_port(text: str, rule: ServerRule, port: int) -> str:
    """The command on ``port``: its port option's value replaced, or the option added."""
    assert rule.port_flag is not None
    option = port_option(text, rule)
    if option is None:
        return f"{text} {rule.port_flag.split('|')[-1]} {port}"
    return text[: option.start(1)] + str(port) + text[option.end(1) :]


def start_server(
    command: Command, rule: ServerRule, cwd: Path, env: dict[str, str], log: Path, until: int
) -> Server:
    text, env, port = command.text, dict(env), rule.port
    if rule.port_flag is not None:
        port = free_port()
        text = with_port(text, rule, port)
    elif rule.port_env is not None:
        port = free_port()
        env[rule.port_env] = str(port)
    elif port:
        with socket.socket() as sock:  # the Makefile fixes the port: it must be free
            assert sock.connect_ex(("127.0.0.1", port)) != 0, (
                f"{command.where}: {command.text!r} listens on port {port}, which is taken"
            )
    process = subprocess.Popen(
        ["bash", "-c", text],
        cwd=cwd,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, terminated as a whole
    )
    server = Server(command, rule, process, port, documented_port(command, rule), env, log, until)
    deadline = time.monotonic() + 600
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"{command.where}: {command.text!r} exited {process.returncode} before it "
                    f"answered:\n{tail(log)}"
                )
            url = f"http://127.0.0.1:{port}{rule.health}"
            if rule.prints_exports:
                server.exports = printed_exports(log)
                uri = server.exports.get("MLFLOW_TRACKING_URI")
                url = f"{uri}{rule.health}" if uri else ""
            if url and answers(url):
                return server
            assert time.monotonic() < deadline, (
                f"{command.where}: {command.text!r}: no answer from {url or 'it'} in 600 s:\n"
                f"{tail(log)}"
            )
            time.sleep(1)
    except BaseException:
        server.stop()
        raise


def printed_exports(log: Path) -> dict[str, str]:
    """The ``export NAME=value`` lines a command printed (one flush: all or none)."""
    exports = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("export ") and "=" in line:
            name, value = shlex.split(line[len("export ") :])[0].split("=", 1)
            exports[name] = value
    return exports


# ----------------------------------------------------------------------------------- the walker
class PageRun:
    """One page's commands, in order: runs of ``run`` commands as one script per fence, servers
    up while the page's later commands need them."""

    def __init__(self, commands: list[Command], request: pytest.FixtureRequest, logs: Path):
        self.commands, self.request, self.logs = commands, request, logs
        self.servers: list[Server] = []
        self._scratch: Scratch | None = None
        self.env: dict[str, str] = {}

    @property
    def scratch(self) -> Scratch:
        """The scratch copy, trained by ``make run`` on first use (the benchmarks page needs
        none)."""
        if self._scratch is None:
            self._scratch = self.request.getfixturevalue("scratch")
            self.env = dict(self._scratch.env)
        return self._scratch

    def log(self, command: Command, suffix: str = ".log") -> Path:
        return self.logs / f"{command.page.stem}-{command.line}{suffix}"

    def run(self) -> None:
        try:
            index = 0
            while index < len(self.commands):
                command = self.commands[index]
                kind, rule = classify(command)
                if kind == "run":  # with the run commands that follow it in the same fence
                    end = index + 1
                    while (
                        end < len(self.commands)
                        and self.commands[end].block == command.block
                        and classify(self.commands[end])[0] == "run"
                    ):
                        end += 1
                    self.run_commands(self.commands[index:end])
                    index = end - 1
                elif kind == "ci":
                    assert ci_runs(command), f"{command.where}: .ci/run does not run it"
                elif kind == "trained":
                    assert self.scratch.summary["alias"] == "champion"  # the fixture ran it
                elif kind == "benchmark":
                    self.benchmark_help(command)
                elif kind == "client":
                    self.client(command)
                elif kind == "server":
                    assert rule is not None
                    self.server(index, command, rule)
                else:
                    raise AssertionError(f"{command.where}: no rule runs {command.text!r}")
                for server in [s for s in self.servers if s.until <= index][::-1]:
                    server.stop()
                    self.servers.remove(server)
                index += 1
        finally:
            for server in self.servers[::-1]:
                server.stop()

    def run_commands(self, commands: list[Command]) -> None:
        for command in commands:
            needed = REQUIRES.get(program(command.text))
            if needed and not any(program(s.command.text) == needed for s in self.servers):
                # the page's prose starts it first ("make prod-services ... then, in another
                # shell with those variables exported"): up until the page ends
                prose = Command(command.page, command.line, command.block, needed)
                rule = classify(prose)[1]
                assert rule is not None
                self.start(prose, rule, until=len(self.commands))
        done = run_script(
            [c.text for c in commands], self.scratch.root, self.env, self.log(commands[0])
        )
        assert done.returncode == 0, done.report(commands)
        self.env = done.env

    def server(self, index: int, command: Command, rule: ServerRule) -> None:
        port = documented_port(command, rule)
        clients = [
            i
            for i, later in enumerate(self.commands[index + 1 :], index + 1)
            if (match := CLIENT.fullmatch(program(later.text))) and int(match.group(1)) == port
        ]
        until = len(self.commands) if rule.prints_exports else max(clients, default=index)
        key = (command.text, tuple(sorted(self.env.items())))
        if until == index and key in self.scratch.answered:
            return  # the same server in the same environment answered already this session
        self.start(command, rule, until)
        self.scratch.answered[key] = command.where

    def start(self, command: Command, rule: ServerRule, until: int) -> None:
        server = start_server(
            command, rule, self.scratch.root, self.env, self.log(command, ".server.log"), until
        )
        self.servers.append(server)
        if server.exports:
            # the commands after it run "in another shell with those variables exported"; the
            # production instance gets its own DAGSTER_HOME (make instance-production replaces
            # its dagster.yaml), so the sqlite instance of make run stays as the other pages use it
            self.env = {
                **self.env,
                **server.exports,
                "DAGSTER_HOME": str(self.scratch.root.parent / "production-dagster"),
            }

    def client(self, command: Command) -> None:
        match = CLIENT.fullmatch(program(command.text))
        assert match is not None
        documented = int(match.group(1))
        server = next((s for s in self.servers if s.documented_port == documented), None)
        assert server is not None, (
            f"{command.where}: {command.text!r} needs a server on port {documented} that the "
            "page starts before it"
        )
        text = re.sub(
            rf"\b(localhost|127\.0\.0\.1):{documented}\b", rf"\g<1>:{server.port}", command.text
        )
        done = run_script([text], self.scratch.root, self.env, self.log(command))
        assert done.returncode == 0, done.report([command])
        assert done.stdout.strip(), f"{command.where}: no answer"
        with contextlib.suppress(json.JSONDecodeError):
            body = json.loads(done.stdout)
            assert not (isinstance(body, dict) and "error" in body), (command.where, body)

    def benchmark_help(self, command: Command) -> None:
        """``--help`` instead of the page's arguments (a benchmark takes minutes; they are run
        by hand, by design); the options the page passes must be among its options."""
        script = re.search(r"benchmarks/\w+\.py", command.text)
        assert script is not None
        options = re.findall(r"(?<!\S)--[\w-]+", command.text[script.end() :])
        done = run_script(
            [f"{command.text[: script.end()]} --help"],
            PROJECT_ROOT,
            dict(os.environ),
            self.log(command),
        )
        assert done.returncode == 0, done.report([command])
        assert "usage:" in done.stdout, f"{command.where}: no argparse usage"
        missing = [o for o in options if not re.search(rf"{o}\b", done.stdout)]
        assert not missing, f"{command.where}: {command.text!r}: not options of it: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "page",
    [page for page in PAGES if parse_commands(page)],
    ids=lambda page: str(page.relative_to(PROJECT_ROOT)),
)
def test_the_pages_commands_run(page: Path, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    commands = parse_commands(page)
    unknown = [f"{c.where}: {c.text}" for c in commands if classify(c)[0] == "unknown"]
    assert not unknown, unknown
    PageRun(commands, request, tmp_path).run()
