"""flightcheck in Dagger: lint → build → run-with-memory-limit → health-poll → ai-smoke, in containers; deploy to Cloud Run.

The same graph as `flightcheck ci` on a laptop, for the service in --source (default: this
repository, whose reference service is mathcoach). Thin on purpose: what to build and how to
start it (build context, Dockerfile, port, memory limit, environment, fake model server or real
provider) comes from the flightcheck library in the checker container, and every check is
`flightcheck ci --runtime attached` run there against the service Dagger started. Dagger has no
per-container memory limit (dagger/dagger#4490): the service runs under flightcheck's memory
guard, which enforces the limit inside its container and reports peak memory and OOM kills.
"""

import contextlib
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
CLOUD_RUN_HOST = "cloudrun"  # the host's local Cloud Run, as the checker reaches it
CREDENTIALS_FILE = "/run/flightcheck/gcp-credentials.json"
OIDC_TOKEN_FILE = "/run/flightcheck/oidc-token"
TOKEN_FILE = "/tmp/flightcheck-registry-token"
BASELINE_FILE = "/tmp/flightcheck-baseline.json"
SOURCES_TAR = "/tmp/flightcheck-sources.tar"  # written in the service image by SITES_SCRIPT
PACKAGES_TAR = f"{FC_DIR}/packages.tar"  # the same tar, in the checker
MONITORING_DIR = "/tmp/flightcheck-monitoring"
KEY_NAMES = {"openai": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY"}

# What the service's source never needs inside a container. Of .flightcheck (local state: the
# local Cloud Run's, ...) only the quality baseline, `quality`'s default, is kept.
SOURCE_IGNORE = [
    ".git", ".venv", "**/__pycache__", "**/*.pyc", ".pytest_cache", ".ruff_cache",
    ".mypy_cache", "flightcheck-report", ".flightcheck/*", "!.flightcheck/baseline.json",
    "ci/sdk", "**/node_modules",
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
    Doc("OpenAI key (e.g. env:OPENAI_API_KEY): giving a key selects the real provider "
        "(flightcheck --real-model); without a key ai-smoke runs against flightcheck's "
        "deterministic fake model server"),
]
GeminiKey = Annotated[
    dagger.Secret | None,
    Doc("Gemini key (e.g. env:GEMINI_API_KEY): giving a key selects the real provider "
        "(flightcheck --real-model)"),
]


class ChecksFailed(Exception):
    """A gate failed (or flightcheck could not run): the message is the report summary."""


@dataclass(frozen=True)
class _Plan:
    """How to build and start the service, as `python -m flightcheck.attached_cli plan`
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
        return self._checker(source, "")

    def _checker(self, source: dagger.Directory, extras: str) -> dagger.Container:
        """The checker with flightcheck's optional dependencies `extras` (e.g. "[monitoring]"),
        installed before the source is mounted: a source change does not reinstall them."""
        return (
            dag.container()
            .from_(PYTHON_IMAGE)
            .with_env_variable("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .with_env_variable("PYTHONUNBUFFERED", "1")
            .with_mounted_cache("/root/.cache/pip", dag.cache_volume("flightcheck-pip"))
            .with_directory("/opt/flightcheck", self.library)
            .with_exec(["pip", "install", f"/opt/flightcheck{extras}"])
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
        try:
            return await self.checker(source).with_exec(
                ["flightcheck", "lint", "--format", format]).stdout()
        except dagger.ExecError as exc:  # findings (or a usage error), then how to rerun
            call = "dagger call lint --source=." + ("" if format == "text" else f" --format={format}")
            raise ChecksFailed(f"flightcheck lint exited with code {exc.exit_code}\n\n"
                               f"{exc.stdout}{exc.stderr}\n\nRerun in Dagger:\n"
                               f"{_rerun_lines('lint', call)}") from None

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
            raise await _fail(checked, code)
        return checked.directory(REPORT_DIR).with_new_file("exit-code", f"{code}\n")

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def deploy(
        self,
        source: Source,
        project: Annotated[
            str | None, Doc("GCP project id to deploy to (default: [deploy].project in "
                            "flightcheck.toml)")
        ] = None,
        region: Annotated[
            str | None, Doc("Cloud Run region, e.g. europe-west1 (default: [deploy].region)")
        ] = None,
        gcp_credentials: Annotated[
            dagger.Secret | None,
            Doc("Google credentials JSON: a service-account key or a Workload Identity "
                "Federation credential configuration (e.g. file:$GOOGLE_APPLICATION_CREDENTIALS "
                "after google-github-actions/auth); the deployer's identity"),
        ] = None,
        oidc_token: Annotated[
            dagger.Secret | None,
            Doc("the CI's OIDC token (e.g. env:GITLAB_OIDC_TOKEN), mounted at "
                f"{OIDC_TOKEN_FILE} for a Workload Identity Federation credential "
                "configuration whose credential_source.file points there"),
        ] = None,
        registry: Annotated[
            str | None, Doc("image repository, e.g. europe-west1-docker.pkg.dev/PROJECT/apps "
                            "(default: [deploy].registry, else REGION-docker.pkg.dev/PROJECT/"
                            "flightcheck)")
        ] = None,
        registry_username: Annotated[
            str, Doc("registry user name; Artifact Registry takes oauth2accesstoken with an "
                     "access token as password")
        ] = "oauth2accesstoken",
        registry_password: Annotated[
            dagger.Secret | None,
            Doc("registry password or token (default: an access token minted from "
                "--gcp-credentials)"),
        ] = None,
        environment: Environment = "dev",
        dry_run: Annotated[
            bool, Doc("print the Cloud Run Service and the diff against what is deployed; "
                      "build, push and change nothing")
        ] = False,
        target: Annotated[
            str, Doc("cloudrun (Google's Cloud Run) or local: the local Cloud Run of `flightcheck "
                     "emulator start`, reached at --api-endpoint, images published to "
                     "--registry (default 127.0.0.1:5000, as the engine reaches it)")
        ] = "cloudrun",
        api_endpoint: Annotated[
            str | None, Doc("the run_v2 API as the checker container reaches it (default: "
                            "Google's); with --target=local required, e.g. "
                            f"http://{CLOUD_RUN_HOST}:8123 with --cloud-run: the URLs the local "
                            "Cloud Run hands out (127.0.0.1:PORT) are then reached at that host")
        ] = None,
        cloud_run: Annotated[
            dagger.Service | None,
            Doc("the local Cloud Run on your machine, e.g. tcp://localhost:8123 (`flightcheck "
                f"emulator start --port 8123`), bound to the checker as host {CLOUD_RUN_HOST}; "
                "the checker must reach its service and tag URLs and fake model servers there "
                "too, which are on ports of their own (docs/deploy.md)"),
        ] = None,
    ) -> str:
        """Build the image, publish it, and roll it out to Cloud Run by digest: candidate at 0%
        with a tag, its tag URL checked with health-poll and ai-smoke, canary steps with
        analysis, promote or roll back automatically (docs/deploy.md). Returns the report
        summary; fails when the rollout did not promote."""
        if target not in ("cloudrun", "local"):
            raise ChecksFailed(f"unknown --target {target!r}: use cloudrun or local")
        if target == "local" and not api_endpoint:
            raise ChecksFailed("--target=local needs --api-endpoint: the local Cloud Run's API as "
                               f"the checker reaches it, e.g. --cloud-run=tcp://localhost:8123 "
                               f"--api-endpoint=http://{CLOUD_RUN_HOST}:8123 (start it with "
                               "`flightcheck emulator start --port 8123`)")
        checker = self._deployer(source, target, project, region, registry, gcp_credentials,
                                 oidc_token)
        if cloud_run is not None:
            checker = checker.with_service_binding(CLOUD_RUN_HOST, cloud_run)
        args = ["deploy", "--target", target, "--env", environment]
        if api_endpoint:
            args += ["--api-endpoint", api_endpoint]
        if dry_run:
            out = checker.with_exec(["flightcheck", *args, "--dry-run"], expect=ReturnType.ANY)
            if await out.exit_code() != 0:
                raise ChecksFailed(await out.stderr())
            return await out.stdout() + await out.stderr()
        plan = await self._plan(source, None, environment, [])
        try:
            repo = (await checker.with_exec(["python", "-m", "flightcheck.cloudrun.images",
                                             "repository", "--target", target]).stdout()).strip()
        except dagger.ExecError as exc:  # a config error: flightcheck's own message
            raise ChecksFailed(exc.stderr or exc.message) from None
        address = f"{repo}:flightcheck-{time.time_ns()}"
        image = self._image(source, plan, None)
        if registry_password is not None or target == "cloudrun":  # the local registry: none
            password = registry_password or await self._registry_token(checker, gcp_credentials)
            image = image.with_registry_auth(address, registry_username, password)
        ref = _by_digest(await image.publish(address))
        done = (
            checker.with_env_variable("FLIGHTCHECK_RUN", str(time.time_ns()))
            .with_exec(["flightcheck", *args, "--image", ref, "--report-dir", REPORT_DIR],
                       expect=ReturnType.ANY)
        )
        code = await done.exit_code()
        if code != 0:
            raise ChecksFailed(await _failure(done, code))
        return await done.file(f"{REPORT_DIR}/summary.md").contents()

    # --- the lessons: measured gates over the run's evidence ---------------------------------

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def parity(
        self,
        source: Source,
        envs: Annotated[
            list[str] | None, Doc("two [environments.*] to compare (default: every pair)")
        ] = None,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> str:
        """Environment parity: AI parameters (model, temperature, top_k, top_p, max output
        tokens) across [environments.*] and as the running service reports them. Fails on a
        mismatch (with the table); flags floating model aliases."""
        return await self._lesson(source, ["parity", *(envs or [])], memory, environment,
                                  _keys(openai_api_key, gemini_api_key))

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def cost(
        self,
        source: Source,
        requests_per_hour: Annotated[
            float | None, Doc("request rate for the hourly/daily projections (default: "
                              "[cost].requests_per_hour)")
        ] = None,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> str:
        """Cost per request from the smoke run's token usage × the shipped price table,
        projected per hour and day; fails over the [cost] budgets (0.05/request, 10/hour,
        100/day USD by default)."""
        args = ["cost"] + (["--requests-per-hour", f"{requests_per_hour:g}"]
                           if requests_per_hour else [])
        return await self._lesson(source, args, memory, environment,
                                  _keys(openai_api_key, gemini_api_key))

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def baseline_save(
        self,
        source: Source,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> dagger.File:
        """Run the smoke suite and return its metrics as a quality baseline file (assertion
        pass rate, format compliance, p95 latency, cost per request): `export --path
        .flightcheck/baseline.json`. Refuses a run whose ai-smoke failed."""
        checked = await self._after(source, ["baseline", "save", "--output", BASELINE_FILE],
                                    memory, environment, _keys(openai_api_key, gemini_api_key))
        return checked.file(BASELINE_FILE)

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def quality(
        self,
        source: Source,
        baseline: Annotated[
            dagger.File | None, Doc("a baseline from baseline-save (default: [quality].baseline "
                                    "in the source)")
        ] = None,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> str:
        """Compare the smoke run's metrics with the baseline: more than 20 % worse warns, more
        than 40 % fails ([quality] overrides both)."""
        args = ["quality"] + (["--baseline", BASELINE_FILE] if baseline is not None else [])
        return await self._lesson(source, args, memory, environment,
                                  _keys(openai_api_key, gemini_api_key), baseline=baseline)

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def resources(
        self,
        source: Source,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> str:
        """Cloud Run memory, CPU, startup probe and min instances from the run's measured peak
        memory and time-to-ready, with the fixed formula's answer beside; fails when [deploy]
        memory is below the measured need. (Several runs and load: `flightcheck resources` on a
        host, where it can start the service more than once.)"""
        return await self._lesson(source, ["resources", "--from-report"], memory, environment,
                                  _keys(openai_api_key, gemini_api_key))

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def readiness(
        self,
        source: Source,
        memory: Memory = None,
        environment: Environment = "dev",
        openai_api_key: OpenaiKey = None,
        gemini_api_key: GeminiKey = None,
    ) -> dagger.Directory:
        """The whole graph, then the production-readiness report: every checklist item decided
        by the run's evidence (manual ones listed, never ticked) in summary.md and report.html
        (with the per-stage timeline and the memory-over-time chart)."""
        checked, code = await self._checks(source, None, memory, environment,
                                           _keys(openai_api_key, gemini_api_key))
        if code not in (0, 1):
            raise await _fail(checked, code)
        return checked.directory(REPORT_DIR).with_new_file("exit-code", f"{code}\n")

    @function
    def monitoring_render(self, source: Source) -> dagger.Directory:
        """The log-based error and token metrics and the error-rate, p95-latency and
        cost-per-hour alert policies from [monitoring], as Cloud Logging / Cloud Monitoring JSON
        (for gcloud) and monitoring.tf.json (Terraform): `export --path monitoring`."""
        return (
            self._monitoring_checker(source)
            .with_exec(["flightcheck", "monitoring", "render", "--output", MONITORING_DIR])
            .directory(MONITORING_DIR)
        )

    @function(cache="never")  # pyright: ignore[reportCallIssue]
    async def monitoring_apply(
        self,
        source: Source,
        gcp_credentials: Annotated[
            dagger.Secret, Doc("a service account key or external-account (Workload Identity "
                               "Federation) JSON, e.g. file:./key.json or env:GCP_CREDENTIALS")
        ],
        project: Annotated[str | None, Doc("GCP project id (default: [deploy].project)")] = None,
    ) -> str:
        """Create or update the rendered metrics and alert policies in the project through
        google-cloud-logging / google-cloud-monitoring (idempotent). Needs
        roles/logging.configWriter and roles/monitoring.alertPolicyEditor."""
        args = ["flightcheck", "monitoring", "apply", "--output", MONITORING_DIR]
        if project:
            args += ["--project", project]
        return await (
            self._monitoring_checker(source)
            .with_mounted_secret(CREDENTIALS_FILE, gcp_credentials)
            .with_env_variable("GOOGLE_APPLICATION_CREDENTIALS", CREDENTIALS_FILE)
            .with_env_variable("FLIGHTCHECK_RUN", str(time.time_ns()))
            .with_exec(args)
            .stdout()
        )

    # --- private helpers ---------------------------------------------------------------------

    def _deployer(
        self,
        source: dagger.Directory,
        target: str,
        project: str | None,
        region: str | None,
        registry: str | None,
        credentials: dagger.Secret | None,
        oidc_token: dagger.Secret | None,
    ) -> dagger.Container:
        """The checker with the deploy target's settings and the deployer's credentials."""
        ctr = self.checker(source).with_env_variable("FLIGHTCHECK__DEPLOY__TARGET", target)
        for key, value in (("PROJECT", project), ("REGION", region), ("REGISTRY", registry)):
            if value:
                ctr = ctr.with_env_variable(f"FLIGHTCHECK__DEPLOY__{key}", value)
        if credentials is not None:
            ctr = (ctr.with_mounted_secret(CREDENTIALS_FILE, credentials)
                   .with_env_variable("GOOGLE_APPLICATION_CREDENTIALS", CREDENTIALS_FILE))
        if oidc_token is not None:
            ctr = ctr.with_mounted_secret(OIDC_TOKEN_FILE, oidc_token)
        return ctr

    async def _registry_token(
        self, deployer: dagger.Container, credentials: dagger.Secret | None
    ) -> dagger.Secret:
        """An Artifact Registry access token minted by google-auth in the deployer, kept as a
        secret (it goes through a file, never through logged output)."""
        if credentials is None:
            raise ChecksFailed("publishing needs registry credentials: pass --gcp-credentials "
                               "(a key or a Workload Identity Federation configuration) or "
                               "--registry-password")
        token = await (
            deployer.with_env_variable("FLIGHTCHECK_RUN", str(time.time_ns()))  # a fresh token
            .with_exec(["python", "-m", "flightcheck.cloudrun.images", "token", "--output",
                        TOKEN_FILE])
            .file(TOKEN_FILE).contents()
        )
        return dag.set_secret(f"flightcheck-registry-token-{time.time_ns()}", token.strip())


    async def _plan(
        self,
        source: dagger.Directory,
        memory: str | None,
        environment: str,
        keys: list[tuple[str, dagger.Secret]],
    ) -> _Plan:
        ctr = self.checker(source)
        args = ["python", "-m", "flightcheck.attached_cli", "plan", "--env", environment,
                "--sidecar-host", FAKE_MODEL_HOST, "--output", PLAN_FILE]
        if memory:
            args += ["--memory", memory]
        for name, secret in keys:  # never shown; giving one selects the real provider
            ctr = ctr.with_secret_variable(name, secret)
            args += ["--secret-env", name]
        if keys:
            args += ["--real-model"]
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
            # Readiness is health-poll's to measure, so Dagger must wait for neither the port
            # nor the image's HEALTHCHECK (which Dagger >= 0.21 runs instead of port checks:
            # a service that crashes or is OOM-killed at start would fail the engine's wait
            # before flightcheck could report it).
            ctr.without_docker_healthcheck()
            .with_exposed_port(plan.port, experimental_skip_healthcheck=True)
            .with_exposed_port(GUARD_PORT)
            # Root capabilities make cgroupfs writable: the guard's hard limit, not a watchdog.
            .as_service(args=[*guard, "--", *command], insecure_root_capabilities=True)
        )

    async def _packages(self, image: dagger.Container) -> tuple[str, dagger.File] | None:
        """The service image's Python version and its installed packages (sources, stubs,
        dist-info) as a tar, for the build stage's type gate on calls into them; None when the
        image's `python` cannot list them."""
        script = (f"import sys; sys.path.insert(0, {FC_DIR!r}); import _proc; "
                  "exec(_proc.SITES_SCRIPT)")
        listed = (
            image.with_file(f"{FC_DIR}/_proc.py",
                            self.library.file("src/flightcheck/runtimes/_proc.py"))
            .with_exec(["python", "-c", script, SOURCES_TAR], expect=ReturnType.ANY)
        )
        if await listed.exit_code() != 0:
            return None
        try:
            version = str(json.loads((await listed.stdout()).strip().splitlines()[-1])["version"])
        except (ValueError, KeyError, IndexError):
            return None
        return version, listed.file(SOURCES_TAR)

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
        # The whole graph renders the readiness checklist, whose monitoring item validates the
        # alert policies against the API types: without the client libraries it would warn
        # "pip install 'flightcheck[monitoring]'", which a Dagger user cannot do.
        checker = self._monitoring_checker(source) if only is None else self.checker(source)
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
            packages = await self._packages(image)
            if packages is not None:  # else the build stage says why calls were not checked
                checker = checker.with_file(PACKAGES_TAR, packages[1])
                env["FLIGHTCHECK_ATTACH_SOURCES"] = PACKAGES_TAR
                env["FLIGHTCHECK_ATTACH_PYTHON"] = packages[0]
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
        if keys:  # a key given to the module is the explicit choice of the real provider
            args += ["--real-model"]
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

    async def _after(
        self,
        source: dagger.Directory,
        args: list[str],
        memory: str | None,
        environment: str,
        keys: list[tuple[str, dagger.Secret]],
        baseline: dagger.File | None = None,
    ) -> dagger.Container:
        """The checks up to ai-smoke (the lessons' evidence), then `flightcheck ARGS` over their
        report in the same container; fails with its output when that exits non-zero."""
        checked, code = await self._checks(source, "ai-smoke", memory, environment, keys)
        if code not in (0, 1):  # 1: a stage failed, which the lesson judges on its own
            raise await _fail(checked, code)
        if baseline is not None:
            checked = checked.with_file(BASELINE_FILE, baseline)
        done = checked.with_exec(["flightcheck", *args, "--report-dir", REPORT_DIR],
                                 expect=ReturnType.ANY)
        if await done.exit_code() != 0:
            raise ChecksFailed(f"{await done.stdout()}{await done.stderr()}")
        return done

    async def _lesson(
        self,
        source: dagger.Directory,
        args: list[str],
        memory: str | None,
        environment: str,
        keys: list[tuple[str, dagger.Secret]],
        baseline: dagger.File | None = None,
    ) -> str:
        done = await self._after(source, args, memory, environment, keys, baseline)
        return await done.stdout()

    def _monitoring_checker(self, source: dagger.Directory) -> dagger.Container:
        # the Cloud client libraries (apply; render validates against their types)
        return self._checker(source, "[monitoring]")

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
            raise await _fail(checked, code)
        return await checked.file(f"{REPORT_DIR}/summary.md").contents()


def _by_digest(published: str) -> str:
    """``REGISTRY/NAME:TAG@sha256:…`` (what publish returns) → ``REGISTRY/NAME@sha256:…``."""
    name, _, digest = published.partition("@")
    if not digest.startswith("sha256:"):
        raise ChecksFailed(f"the registry returned no digest for {published!r}")
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rpartition(":")[0]
    return f"{name}@{digest}"


def _keys(openai: dagger.Secret | None, gemini: dagger.Secret | None) -> list[tuple[str, dagger.Secret]]:
    pairs = ((KEY_NAMES["openai"], openai), (KEY_NAMES["gemini"], gemini))
    return [(name, secret) for name, secret in pairs if secret is not None]


def _error_text(exc: dagger.QueryError) -> str:
    """The engine's error, with the failing step's output when it was an exec."""
    if isinstance(exc, dagger.ExecError):
        return "\n".join(part for part in (exc.message, exc.stdout, exc.stderr) if part)
    return str(exc)


async def _fail(checked: dagger.Container, code: int) -> ChecksFailed:
    """The error for a failed run, after one failing exec where the checks ran: with
    `dagger call -i` Dagger opens its terminal there (the reports in /flightcheck-report, the
    service bound at svc, its guard at svc:8931)."""
    message = await _failure(checked, code)
    note = f"flightcheck exited with code {code}; the reports are in {REPORT_DIR}"
    with contextlib.suppress(dagger.ExecError):
        await checked.with_exec(["sh", "-c", f'echo "{note}" >&2; exit {code}']).sync()
    return ChecksFailed(message)


async def _failure(checked: dagger.Container, code: int) -> str:
    """What to show when flightcheck exited non-zero: the summary and the `dagger call` (and its
    interactive variant) that reruns each failed stage; else flightcheck's error output."""
    if code == 1:
        summary = await checked.file(f"{REPORT_DIR}/summary.md").contents()
        report = await checked.file(f"{REPORT_DIR}/flightcheck-report.json").contents()
        return f"a gate failed (flightcheck exit code 1)\n\n{summary}{_reruns(report)}"
    return f"flightcheck exited with code {code}:\n{await checked.stderr()}"


def _reruns(report: str) -> str:
    try:
        stages: list[dict[str, Any]] = json.loads(report)["stages"]
    except (ValueError, KeyError, TypeError):
        return ""
    lines = "".join(_rerun_lines(stage["name"], stage["repro"]["dagger"]) for stage in stages
                    if stage.get("status") == "fail" and stage.get("repro", {}).get("dagger"))
    return f"\n\nRerun in Dagger:\n{lines}" if lines else ""


def _rerun_lines(stage: str, call: str) -> str:
    return f"- {stage}: `{call}`\n  interactive, a shell where it failed: `{_interactive(call)}`\n"


def _interactive(call: str) -> str:
    """`dagger call -i ...`: the same call, opening a terminal at the failure."""
    head, sep, rest = call.partition(" call ")
    return f"{head} call -i {rest}" if sep and head.split()[:1] == ["dagger"] else call
