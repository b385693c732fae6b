"""flightcheck in Dagger: lint → build → run-with-memory-limit → health-poll → ai-smoke, in containers.

The same graph as `flightcheck ci` on a laptop, for the service in --source (default: this
repository, whose reference service is mathcoach). Thin on purpose: what to build and how to
start it (build context, Dockerfile, port, memory limit, environment, fake model server or real
provider) comes from the flightcheck library in the checker container, and every check is
`flightcheck ci --runtime attached` run there against the service Dagger started. Dagger has no
per-container memory limit (dagger/dagger#4490): the service runs under flightcheck's memory
guard, which enforces the limit inside its container and reports peak memory and OOM kills.
"""

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

import dagger
from dagger import DefaultPath, Doc, Ignore, ReturnType, dag, function, object_type

# Checks run with cache="never": a cached result would be a stale verdict. (dagger-io 0.21.11's
# typing overloads of `function` omit `cache`, which its implementation takes: hence the ignores.)
PYTHON_IMAGE = "python:3.11-slim"
SERVICE_HOST = "svc"  # the service under test, as the checker reaches it
FAKE_MODEL_HOST = "fakemodel"  # the fake model server, as the service and the checker reach it
GUARD_PORT = 8931  # the memory guard's status port, beside the service
FC_DIR = "/fc"  # guard / fake model files mounted into containers without flightcheck
SOURCE_DIR = "/src"
REPORT_DIR = "/flightcheck-report"
PLAN_FILE = "/tmp/flightcheck-plan.json"
KEY_NAMES = {"openai": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY"}

# What the service's source never needs inside a container.
SOURCE_IGNORE = [
    ".git", ".venv", "**/__pycache__", "**/*.pyc", ".pytest_cache", ".ruff_cache",
    ".mypy_cache", "flightcheck-report", ".flightcheck", "ci/sdk", "**/node_modules",
]
# flightcheck itself: what `pip install` needs, nothing else (the pip layer stays cached).
LIBRARY_IGNORE = ["*", "!pyproject.toml", "!README.md", "!src/flightcheck", "**/__pycache__"]

Source = Annotated[
    dagger.Directory,
    DefaultPath("/"),
    Ignore(SOURCE_IGNORE),
    Doc("the service to check: its flightcheck.toml, Dockerfile and code (default: this "
        "repository, whose service is mathcoach)"),
]
Memory = Annotated[
    str | None,
    Doc("hard memory ceiling, like Cloud Run's: 512Mi, 1Gi, 2Gi (default: [run].memory_limit "
        "in flightcheck.toml)"),
]
Environment = Annotated[
    str, Doc("which [environments.X] AI parameters (model, temperature, ...) the service gets"),
]
OpenaiKey = Annotated[
    dagger.Secret | None,
    Doc("OpenAI key (e.g. env:OPENAI_API_KEY): ai-smoke then runs against the real provider; "
        "without a key it runs against flightcheck's deterministic fake model server"),
]
GeminiKey = Annotated[
    dagger.Secret | None,
    Doc("Gemini key (e.g. env:GEMINI_API_KEY): ai-smoke then runs against the real provider"),
]


class ChecksFailed(Exception):
    """A gate failed (or flightcheck could not run): the message is the report summary."""


@dataclass(frozen=True)
class _Plan:
    """How to build and start the service, as `python -m flightcheck.runtimes.attached plan`
    decided it from flightcheck.toml."""

    service: str
    context: str
    dockerfile: str
    port: int
    memory_limit: str
    env: dict[str, str]
    sidecar_port: int | None
    sidecar_args: list[str]

    @classmethod
    def parse(cls, text: str) -> "_Plan":
        data: dict[str, Any] = json.loads(text)
        sidecar = data.get("sidecar") or {}
        return cls(
            service=str(data["service"]),
            context=str(data["context"]),
            dockerfile=str(data["dockerfile"]),
            port=int(data["port"]),
            memory_limit=str(data["memory_limit"]),
            env={str(k): str(v) for k, v in data["env"].items()},
            sidecar_port=int(sidecar["port"]) if sidecar else None,
            sidecar_args=[str(a) for a in sidecar.get("args", [])],
        )


@object_type
class Flightcheck:
    """Preflight checks for an AI (LLM-backed) web service: the checks flightcheck runs on a
    laptop, in Dagger containers. `dagger call ci export --path=flightcheck-report` writes the
    reports (JSON, JUnit, Markdown, SARIF) to the host."""

    library: Annotated[
        dagger.Directory,
        DefaultPath("/"),
        Ignore(LIBRARY_IGNORE),
        Doc("flightcheck's own source, installed into the checker (default: this module's "
            "repository; there is no need to pass it)"),
    ]

    @function
    def checker(self, source: Source) -> dagger.Container:
        """A python:3.11-slim container with flightcheck installed and the service's source at
        /src (the working directory): where every check runs. Try `checker terminal`."""
        return (
            dag.container()
            .from_(PYTHON_IMAGE)
            .with_env_variable("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .with_env_variable("PYTHONUNBUFFERED", "1")
            .with_mounted_cache("/root/.cache/pip", dag.cache_volume("flightcheck-pip"))
            .with_directory("/opt/flightcheck", self.library)
            .with_exec(["pip", "install", "/opt/flightcheck"])
            .with_directory(SOURCE_DIR, source)
            .with_workdir(SOURCE_DIR)
        )

    @function
    async def lint(
        self,
        source: Source,
        format: Annotated[str, Doc("text, json or sarif")] = "text",  # noqa: A002
    ) -> str:
        """The lint stage: syntax, imports against declared dependencies, hard-coded keys, LLM
        calls without timeouts, floating model names, Dockerfile problems. Fails on errors."""
        return await self.checker(source).with_exec(["flightcheck", "lint", "--format", format]).stdout()

    @function
    async def build(
        self,
        source: Source,
        dockerfile: Annotated[
            str | None, Doc("Dockerfile, relative to the build context (default: "
                            "[service].dockerfile)")
        ] = None,
    ) -> dagger.Container:
        """The service's image, built from its Dockerfile by Dagger (context and Dockerfile from
        flightcheck.toml)."""
        plan = await self._plan(source, None, "dev", [])
        return self._image(source, plan, dockerfile)

    @function
    async def service(
        self,
        source: Source,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> dagger.Service:
        """The built service, started under flightcheck's memory guard (the limit is enforced
        inside the container; peak memory, OOM and logs on port 8931), with the environment the
        checks give it and, without a provider key, the fake model server bound as `fakemodel`.
        Try `service up --ports 8080:8080`."""
        keys = _keys(openai_api_key, gemini_api_key)
        plan = await self._plan(source, memory, environment, keys)
        return await self._service(self._image(source, plan, None), plan, keys)

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def run_with_memory_limit(
        self,
        source: Source,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> str:
        """Build, start under the memory limit, report peak memory against it (fails on an OOM
        kill or a crash at start). Returns the report summary."""
        return await self._stage(source, "run-with-memory-limit", memory, environment,
                                 _keys(openai_api_key, gemini_api_key))

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def health_poll(
        self,
        source: Source,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> str:
        """Build, start, poll the startup and liveness probes with Cloud Run's semantics (fails
        when the service is not ready within the startup probe's window). Returns the summary."""
        return await self._stage(source, "health-poll", memory, environment,
                                 _keys(openai_api_key, gemini_api_key))

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def ai_smoke(
        self,
        source: Source,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> str:
        """Build, start, poll, then run the AI smoke suite (smoke.yaml): answers, response
        shapes, latency, token and cost budgets. Returns the report summary."""
        return await self._stage(source, "ai-smoke", memory, environment,
                                 _keys(openai_api_key, gemini_api_key))

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def ci(
        self,
        source: Source,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
        allow_failure: Annotated[
            bool, Doc("return the reports even when a gate failed; the exit-code file in them "
                      "holds flightcheck's exit code (CI: export, then exit with it)")
        ] = False,
    ) -> dagger.Directory:
        """The whole graph; returns the report directory: flightcheck-report.json, junit.xml,
        summary.md, report.html, lint.sarif and exit-code. Fails when a gate failed, unless
        --allow-failure."""
        checked, code = await self._checks(source, None, memory, environment,
                                           _keys(openai_api_key, gemini_api_key))
        if code != 0 and not (allow_failure and code == 1):
            raise ChecksFailed(await _failure(checked, code))
        return checked.directory(REPORT_DIR).with_new_file("exit-code", f"{code}\n")

    # --- private helpers ---------------------------------------------------------------------

    async def _plan(
        self,
        source: dagger.Directory,
        memory: str | None,
        environment: str,
        keys: list[tuple[str, dagger.Secret]],
    ) -> _Plan:
        ctr = self.checker(source)
        args = ["python", "-m", "flightcheck.runtimes.attached", "plan", "--env", environment,
                "--sidecar-host", FAKE_MODEL_HOST, "--output", PLAN_FILE]
        if memory:
            args += ["--memory", memory]
        for name, secret in keys:  # they decide real provider vs fake model, never shown
            ctr = ctr.with_secret_variable(name, secret)
            args += ["--secret-env", name]
        return _Plan.parse(await ctr.with_exec(args).file(PLAN_FILE).contents())

    def _image(self, source: dagger.Directory, plan: _Plan, dockerfile: str | None) -> dagger.Container:
        context = source if plan.context in ("", ".") else source.directory(plan.context)
        return context.docker_build(dockerfile=dockerfile or plan.dockerfile)

    def _fake_model(self, plan: _Plan) -> dagger.Service:
        port = plan.sidecar_port or 8929
        return (
            dag.container()
            .from_(PYTHON_IMAGE)
            .with_env_variable("PYTHONUNBUFFERED", "1")
            .with_file(f"{FC_DIR}/server.py", self.library.file("src/flightcheck/fakemodel/server.py"))
            .with_exposed_port(port)
            .as_service(args=["python", f"{FC_DIR}/server.py", "--host", "0.0.0.0", "--port",
                              str(port), *plan.sidecar_args])
        )

    async def _service(
        self, image: dagger.Container, plan: _Plan, keys: list[tuple[str, dagger.Secret]]
    ) -> dagger.Service:
        command = [*await image.entrypoint(), *await image.default_args()]
        if not command:
            raise ChecksFailed("the image has neither ENTRYPOINT nor CMD: add a CMD that starts "
                               "the service")
        user = await image.user()
        guard = ["python3", f"{FC_DIR}/guard.py", "--limit", plan.memory_limit,
                 "--status-port", str(GUARD_PORT), "--status-host", "0.0.0.0"]
        if user not in ("", "root", "0", "0:0"):
            guard += ["--user", user]  # the guard needs root for its cgroup; the service does not
        ctr = (
            image.with_user("root")
            .with_file(f"{FC_DIR}/guard.py", self.library.file("src/flightcheck/runtimes/guard.py"))
            .with_file(f"{FC_DIR}/_proc.py", self.library.file("src/flightcheck/runtimes/_proc.py"))
        )
        for name, value in sorted(plan.env.items()):
            ctr = ctr.with_env_variable(name, value)
        for name, secret in keys:
            ctr = ctr.with_secret_variable(name, secret)
        if plan.sidecar_port is not None:
            ctr = ctr.with_service_binding(FAKE_MODEL_HOST, self._fake_model(plan))
        return (
            # Readiness is health-poll's to measure, so Dagger must not wait for the port.
            ctr.with_exposed_port(plan.port, experimental_skip_healthcheck=True)
            .with_exposed_port(GUARD_PORT)
            # Root capabilities make cgroupfs writable: the guard's hard limit, not a watchdog.
            .as_service(args=[*guard, "--", *command], insecure_root_capabilities=True)
        )

    async def _checks(
        self,
        source: dagger.Directory,
        only: str | None,
        memory: str | None,
        environment: str,
        keys: list[tuple[str, dagger.Secret]],
    ) -> tuple[dagger.Container, int]:
        """`flightcheck ci --runtime attached` in the checker, bound to the service: the finished
        container and flightcheck's exit code."""
        plan = await self._plan(source, memory, environment, keys)
        image = self._image(source, plan, None)
        checker = self.checker(source)
        env = {"FLIGHTCHECK_ATTACH_ENDPOINT": f"http://{SERVICE_HOST}:{plan.port}",
               "FLIGHTCHECK_ATTACH_IMAGE": f"{plan.service} (dagger docker_build {plan.dockerfile})"}
        started = time.monotonic()
        try:
            await image.sync()
        except dagger.QueryError as exc:  # reported as the build stage's failure, with the log
            checker = checker.with_new_file(f"{FC_DIR}/build-error.txt", _error_text(exc))
            env["FLIGHTCHECK_ATTACH_BUILD_ERROR"] = f"{FC_DIR}/build-error.txt"
        else:
            env["FLIGHTCHECK_ATTACH_BUILD_SECONDS"] = f"{time.monotonic() - started:.3f}"
            checker = checker.with_service_binding(SERVICE_HOST, await self._service(image, plan, keys))
            env["FLIGHTCHECK_ATTACH_GUARD"] = f"http://{SERVICE_HOST}:{GUARD_PORT}"
            if plan.sidecar_port is not None:
                checker = checker.with_service_binding(FAKE_MODEL_HOST, self._fake_model(plan))
                env["FLIGHTCHECK_ATTACH_SIDECAR"] = f"http://{FAKE_MODEL_HOST}:{plan.sidecar_port}"
        for name, value in sorted(env.items()):
            checker = checker.with_env_variable(name, value)
        for name, secret in keys:
            checker = checker.with_secret_variable(name, secret)
        args = ["ci", "--runtime", "attached", "--report-dir", REPORT_DIR, "--env", environment]
        if memory:
            args += ["--memory", memory]
        if only:
            args += ["--only", only]
        # A key reaches the service env (and flightcheck's redactor) through the shell, so its
        # value never appears in an exec's arguments.
        script = 'exec flightcheck "$@"' + "".join(
            f' --service-env "{name}=${name}"' for name, _ in keys
        )
        checked = (
            checker.with_env_variable("FLIGHTCHECK_RUN", str(time.time_ns()))  # never a cache hit
            .with_exec(["sh", "-c", script, "flightcheck", *args], expect=ReturnType.ANY)
        )
        return checked, await checked.exit_code()

    async def _stage(
        self,
        source: dagger.Directory,
        stage: str,
        memory: str | None,
        environment: str,
        keys: list[tuple[str, dagger.Secret]],
    ) -> str:
        checked, code = await self._checks(source, stage, memory, environment, keys)
        if code != 0:
            raise ChecksFailed(await _failure(checked, code))
        return await checked.file(f"{REPORT_DIR}/summary.md").contents()


def _keys(openai: dagger.Secret | None, gemini: dagger.Secret | None) -> list[tuple[str, dagger.Secret]]:
    pairs = ((KEY_NAMES["openai"], openai), (KEY_NAMES["gemini"], gemini))
    return [(name, secret) for name, secret in pairs if secret is not None]


def _error_text(exc: dagger.QueryError) -> str:
    """The engine's error, with the failing step's output when it was an exec."""
    if isinstance(exc, dagger.ExecError):
        return "\n".join(part for part in (exc.message, exc.stdout, exc.stderr) if part)
    return str(exc)


async def _failure(checked: dagger.Container, code: int) -> str:
    """What to show when flightcheck exited non-zero: the summary, else its error output."""
    if code == 1:
        summary = await checked.file(f"{REPORT_DIR}/summary.md").contents()
        return f"a gate failed (flightcheck exit code 1)\n\n{summary}"
    return f"flightcheck exited with code {code}:\n{await checked.stderr()}"
