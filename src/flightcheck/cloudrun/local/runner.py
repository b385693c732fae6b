"""Runs a revision as a real container (docker runtime) or host process (process runtime).

A revision instance is what Cloud Run would start: the image pulled by digest from the local
registry, the revision's env plus ``PORT``, ``K_SERVICE``, ``K_REVISION``, ``K_CONFIGURATION``,
its memory limit, and its startup probe — run by the health-poll stage's own probe loop
(:func:`flightcheck.stages.health.wait_ready`), so the emulator and the pipeline judge
readiness the same way. A failed start becomes a Cloud Run condition reason and message, with
the instance's last log lines kept for the rollout to print.

The process runtime (no Docker daemon) cannot run an image: it runs the source tree named by the
revision's ``run.flightcheck.dev/source`` annotation with the container's command + args.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import anyio
import anyio.to_thread

from flightcheck.config import ProbeConfig, format_memory
from flightcheck.fakemodel import SERVER_SCRIPT
from flightcheck.runtimes import listening
from flightcheck.runtimes.base import Exit, Image, Running, Runtime, Sidecar
from flightcheck.secrets import Redactor
from flightcheck.stages.health import compact_log_tail, describe_exit, wait_ready

SOURCE_ANNOTATION = "run.flightcheck.dev/source"
# Fake mode: the revision gets flightcheck's fake model server beside it (same network
# namespace), listening on this port, as the pipeline's own stages run it.
FAKE_MODEL_ANNOTATION = "run.flightcheck.dev/fake-model-port"
_LOG_LINES = 200
# Cloud Run's default startup probe: TCP, one attempt per 240 s.
_DEFAULT_TCP_WINDOW_S = 240.0


@dataclass(frozen=True)
class ProbeSpec:
    """A startup probe: HTTP GET ``path`` (Cloud Run semantics) or a TCP connect when path is None."""

    path: str | None
    initial_delay_s: float = 0.0
    period_s: float = 240.0
    timeout_s: float = 240.0
    failure_threshold: int = 1

    @property
    def window_s(self) -> float:
        return self.initial_delay_s + self.period_s * self.failure_threshold


@dataclass(frozen=True)
class RevisionSpec:
    """What it takes to start one instance of a revision."""

    service: str  # short names: K_SERVICE, K_REVISION
    revision: str
    image: str
    port: int
    env: dict[str, str]
    memory_limit: int
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    probe: ProbeSpec = ProbeSpec(None)
    source: str | None = None  # the process runtime's source tree
    fake_model_port: int | None = None
    liveness: ProbeSpec | None = None  # HTTP liveness probe, checked while the instance runs


@dataclass
class Outcome:
    """Ready, or why not: a Cloud Run condition reason (enum name) and message."""

    ready: bool
    reason: str = ""
    reason_field: Literal["revision_reason", "reason"] = "revision_reason"
    message: str = ""
    logs: str = ""
    startup_s: float | None = None


class Instance:
    """One running instance of a revision."""

    def __init__(self, spec: RevisionSpec, running: Running, startup_s: float) -> None:
        self.spec = spec
        self.running = running
        self.startup_s = startup_s
        self.endpoint = running.endpoint
        self.sidecar_endpoint = running.sidecar_endpoint
        self.container_id: str = getattr(running, "container_id", "") or ""

    async def logs(self, tail: int) -> str:
        return await self.running.logs(tail)

    async def stop(self) -> None:
        await self.running.stop()


class RevisionRunner:
    """Starts revision instances on the docker runtime, or the process runtime without one."""

    def __init__(self, runtime: Runtime, *, redactor: Redactor | None = None) -> None:
        self.runtime = runtime
        self.redactor = redactor or Redactor()

    @property
    def kind(self) -> str:
        return self.runtime.name

    async def start(self, spec: RevisionSpec) -> tuple[Instance | None, Outcome]:
        started = time.perf_counter()
        missing = await self._image(spec)
        if missing is not None:
            return None, missing
        env = {
            **spec.env,
            "K_SERVICE": spec.service,
            "K_REVISION": spec.revision,
            "K_CONFIGURATION": spec.service,
        }
        if self.runtime.name == "process":
            image = Image(ref=str(spec.source))
            command: list[str] | None = [*spec.command, *spec.args]
        else:
            image = Image(ref=spec.image)
            command = [*spec.command, *spec.args] or None
        sidecar = (Sidecar(script=SERVER_SCRIPT, port=spec.fake_model_port)
                   if spec.fake_model_port else None)
        try:
            running = await self.runtime.start(image, port=spec.port, env=env,
                                               memory_limit=spec.memory_limit, command=command,
                                               sidecar=sidecar)
        except Exception as exc:  # a runtime that cannot start it: the revision fails, we go on
            what = getattr(exc, "what", None) or str(exc)
            return None, Outcome(False, "HEALTH_CHECK_CONTAINER_ERROR",
                                 message=f"The container of revision '{spec.revision}' could not "
                                 f"be started: {self.redactor(what)}")
        try:
            outcome = await self._probe(spec, running)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await running.stop()
            raise
        outcome.startup_s = time.perf_counter() - started
        if outcome.ready:
            return Instance(spec, running, outcome.startup_s), outcome
        outcome.logs = self.redactor(await running.logs(_LOG_LINES))
        await running.stop()
        return None, outcome

    async def _image(self, spec: RevisionSpec) -> Outcome | None:
        """Make the image available (pull by digest); an Outcome when it cannot be had."""
        if self.runtime.name == "process":
            if not spec.source or not await anyio.Path(spec.source).is_dir():
                return Outcome(False, "CONTAINER_MISSING", "reason",
                               f"Revision '{spec.revision}': no Docker daemon, so the local target "
                               "runs the revision as a host process, which needs the "
                               f"'{SOURCE_ANNOTATION}' annotation naming an existing source "
                               f"directory (got {spec.source!r}) and the container's command")
            if not (spec.command or spec.args):
                return Outcome(False, "CONTAINER_MISSING", "reason",
                               f"Revision '{spec.revision}': the process runtime needs the "
                               "container's command (e.g. [\"python\", \"-m\", \"app\"])")
            return None
        client = getattr(self.runtime, "client", None)
        if client is None:
            return None
        return await anyio.to_thread.run_sync(partial(_pull, client, spec.image))

    async def _probe(self, spec: RevisionSpec, running: Running) -> Outcome:
        probe = spec.probe
        if probe.path is not None:
            config = ProbeConfig.model_construct(
                path=probe.path, initial_delay_s=probe.initial_delay_s, period_s=probe.period_s,
                timeout_s=probe.timeout_s, failure_threshold=probe.failure_threshold)
            result = await wait_ready(running.endpoint, config, status=running.status,
                                      started_at=running.started_at)
            if result.ready:
                return Outcome(True)
            exit_ = result.exit
            if exit_ is None:
                reasons = "; ".join(f"{r.text} ×{r.count}" for r in result.reasons[:3])
                return Outcome(
                    False, "HEALTH_CHECK_CONTAINER_ERROR",
                    message=f"The user-provided container failed the configured startup probe "
                    f"checks: HTTP GET {probe.path} did not succeed within "
                    f"{probe.window_s:g} s (delay {probe.initial_delay_s:g} s + "
                    f"{probe.period_s:g} s × {probe.failure_threshold}); {reasons or 'no answer'}")
            return _exited(spec, exit_)
        # TCP startup probe (Cloud Run's default): something must listen on the port.
        deadline = time.monotonic() + probe.window_s
        await anyio.sleep(probe.initial_delay_s)
        while time.monotonic() < deadline:
            exit_ = await running.status()
            if exit_ is not None:
                return _exited(spec, exit_)
            if await anyio.to_thread.run_sync(listening, running.endpoint):
                return Outcome(True)
            await anyio.sleep(0.05)
        return Outcome(False, "HEALTH_CHECK_CONTAINER_ERROR",
                       message=f"The user-provided container failed to start and listen on the "
                       f"port defined provided by the PORT={spec.port} environment variable "
                       f"within the allocated timeout of {probe.window_s:g} s")


def _exited(spec: RevisionSpec, exit_: Exit) -> Outcome:
    if exit_.oom:
        return Outcome(False, "HEALTH_CHECK_CONTAINER_ERROR",
                       message=f"Memory limit of {format_memory(spec.memory_limit)} exceeded: "
                       f"the container {describe_exit(exit_)} while starting. Consider "
                       "increasing the memory limit.")
    return Outcome(False, "HEALTH_CHECK_CONTAINER_ERROR",
                   message=f"The user-provided container failed to start and listen on the port "
                   f"defined provided by the PORT={spec.port} environment variable: it "
                   f"{describe_exit(exit_)}. Logs for this revision might contain more "
                   "information.")


def _pull(client: object, ref: str) -> Outcome | None:
    import docker.errors

    images = client.images  # type: ignore[attr-defined]
    with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
        images.get(ref)
        return None  # already here under that digest
    try:
        images.pull(ref)
    except docker.errors.DockerException as exc:
        detail = str(getattr(exc, "explanation", "") or exc)
        return Outcome(False, "CONTAINER_MISSING", "reason",
                       f"Image '{ref}' not found: {detail}. Push it to the registry "
                       "(docker push) and deploy it by its digest.")
    return None


def tail_for_message(logs: str, keep: int = 8) -> str:
    """A compact log tail for a condition message."""
    return compact_log_tail(logs, keep)
