"""What every stage receives: config, the chosen runtime, shared artifacts and cleanup."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from flightcheck.config import Loaded, format_memory, parse_memory
from flightcheck.results import Repro, StageName, StageResult, Status
from flightcheck.runtimes.base import Running, Sidecar
from flightcheck.secrets import MASK, Redactor, is_secret

# Dagger turns snake_case function names into kebab-case CLI names.
DAGGER_FUNCTION: dict[StageName, str] = {
    "lint": "lint",
    "build": "build",
    "run-with-memory-limit": "run-with-memory-limit",
    "health-poll": "health-poll",
    "ai-smoke": "ai-smoke",
    "deploy": "deploy",
}

Progress = Callable[[StageName, str], None]

# Dagger functions that take no --memory, --environment or key arguments (the stage functions,
# ci and service take them all).
_DAGGER_SOURCE_ONLY = ("lint", "build")

# Provider keys the Dagger module takes as dagger.Secret arguments.
_DAGGER_KEYS = {"OPENAI_API_KEY": "openai-api-key", "GEMINI_API_KEY": "gemini-api-key"}


def _quiet(stage: StageName, message: str) -> None:
    del stage, message


@dataclass
class Context:
    """Run-wide state. Stages put what later stages need into ``artifacts``."""

    loaded: Loaded
    report_dir: Path = Path("flightcheck-report")
    runtime_name: str = "auto"  # as requested: auto|docker|process
    memory_override: str | None = None
    service_env: dict[str, str] = field(default_factory=dict)
    # --service-env-file: every value in such a file is a secret (redacted everywhere).
    secret_env_files: list[Path] = field(default_factory=list)
    secret_env: dict[str, str] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=Redactor)
    progress: Progress = _quiet
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    artifacts: dict[str, object] = field(default_factory=dict)
    environment: str = "dev"  # which [environments.X] AI parameters the service gets
    # Set by stages' prepare hooks before anything starts (e.g. ai-smoke's fake model server).
    extra_service_env: dict[str, str] = field(default_factory=dict)
    # Fake mode: the fake model server's URLs and placeholder keys. They win over everything
    # the service was given, so no key the user passed reaches a real provider.
    provider_env: dict[str, str] = field(default_factory=dict)
    sidecar: Sidecar | None = None
    interrupted: bool = False  # set when the run is being cancelled: finalizers must not wait
    selected: tuple[StageName, ...] = ()  # the stages of this run (set by graph.run)

    def __post_init__(self) -> None:
        self.redactor.add_env(self.service_env)
        self.redactor.add_env(self.config.service.env)
        self.redactor.add(*self.secret_env.values())

    @property
    def config(self):  # noqa: ANN201 - Config; property keeps call sites short
        return self.loaded.config

    @property
    def memory_limit(self) -> str:
        return self.memory_override or self.config.run.memory_limit

    @property
    def memory_limit_bytes(self) -> int:
        return parse_memory(self.memory_limit)

    def service_environment(self) -> dict[str, str]:
        """Environment for the service under test, later wins: the environment's AI
        parameters, [service].env, prepare hooks (the suite's env), --service-env-file,
        --service-env, and in fake mode the fake model server's URLs and placeholder keys."""
        ai = self.config.environments.get(self.environment)
        return {
            **(ai.as_env() if ai else {}),
            **self.config.service.env,
            **self.extra_service_env,
            **self.secret_env,
            **self.service_env,
            **self.provider_env,
        }

    def running(self, stage: StageName) -> Running:
        """The service run-with-memory-limit started; a clear error when there is none."""
        running = self.artifacts.get("running")
        if not isinstance(running, Running):
            from flightcheck.errors import StageError

            raise StageError(
                f"{stage} needs a running service",
                why="run-with-memory-limit did not leave one in ctx.artifacts['running']",
                fix="run the whole graph (flightcheck ci) or at least run-with-memory-limit first",
            )
        return running

    def log(self, stage: StageName, message: str) -> None:
        self.progress(stage, self.redactor(message))

    # --- results -------------------------------------------------------------------------

    def repro(self, stage: StageName) -> Repro:
        """The commands that rerun just ``stage``, locally and in Dagger. Secrets are
        referenced by variable name, never shown."""
        local = ["flightcheck", "ci", "--only", stage]
        # The Dagger module reads flightcheck.toml at the root of --source.
        source = _short_path(self.loaded.path.parent) if self.loaded.path is not None else "."
        dagger = ["dagger", "call", DAGGER_FUNCTION[stage], f"--source={source}"]
        if stage == "deploy":
            return self._deploy_repro(source)
        if self.loaded.path is not None:
            local += ["--config", _short_path(self.loaded.path)]
        if self.runtime_name not in ("auto", "attached"):  # attached only exists inside Dagger
            local += ["--runtime", self.runtime_name]
        if self.memory_override:
            local += ["--memory", self.memory_override]
            if stage not in _DAGGER_SOURCE_ONLY:
                dagger += [f"--memory={self.memory_override}"]
        if self.environment != "dev":
            local += ["--env", self.environment]
            if stage not in _DAGGER_SOURCE_ONLY:
                dagger += [f"--environment={self.environment}"]
        for file in self.secret_env_files:
            local += ["--service-env-file", _short_path(file)]
        real = self.config.smoke.model == "real"
        if stage not in _DAGGER_SOURCE_ONLY and real:  # in Dagger a key selects the real provider
            dagger += [
                f"--{_DAGGER_KEYS[key]}=env:{key}"
                for key in {**self.secret_env, **self.service_env}
                if key in _DAGGER_KEYS
            ]
        text = shlex.join(local)
        if real and not self.loaded.source_of("smoke.model").startswith("file:"):
            text += " --real-model"
        for key, value in self.service_env.items():
            # The paste works where the variable is set.
            shown = f'{key}="${key}"' if is_secret(key, value) else shlex.quote(f"{key}={value}")
            text += f" --service-env {shown}"
        return Repro(local=text, dagger=shlex.join(dagger))

    def _deploy_repro(self, source: str) -> Repro:
        """`flightcheck deploy …`; in Dagger, `deploy` (Cloud Run only) takes no memory or keys."""
        local = ["flightcheck", "deploy"]
        dagger = ["dagger", "call", "deploy", f"--source={source}"]
        if self.loaded.path is not None:
            local += ["--config", _short_path(self.loaded.path)]
        d = self.config.deploy
        if d.target == "cloudrun":
            local += ["--target", "cloudrun"]
            if d.project:
                local += ["--project", d.project]
                dagger += [f"--project={d.project}"]
        if self.environment != "dev":
            local += ["--env", self.environment]
            dagger += [f"--environment={self.environment}"]
        for file in self.secret_env_files:
            local += ["--service-env-file", _short_path(file)]
        text = shlex.join(local)
        for key, value in self.service_env.items():
            shown = f'{key}="${key}"' if is_secret(key, value) else shlex.quote(f"{key}={value}")
            text += f" --service-env {shown}"
        in_dagger = shlex.join(dagger)
        if d.target == "cloudrun":  # the shell expands it where the paste runs
            in_dagger += ' --gcp-credentials=file:"$GOOGLE_APPLICATION_CREDENTIALS"'
        return Repro(local=text, dagger=in_dagger)

    def result(self, stage: StageName, status: Status = Status.PASS, summary: str = "") -> StageResult:
        """A fresh result for ``stage`` with its repro filled in."""
        return StageResult(name=stage, status=status, summary=summary, repro=self.repro(stage))

    def memory_text(self, n: int | None) -> str:
        return "unknown" if n is None else format_memory(n)


def _short_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


def env_pairs(items: list[str]) -> dict[str, str]:
    """``["K=V", ...]`` → dict; raises ValueError naming the bad item (by its position when it
    looks like a secret: a key pasted without its name)."""
    out: dict[str, str] = {}
    for n, item in enumerate(items, 1):
        key, sep, value = item.partition("=")
        if not sep or not key:
            shown = f"item {n}" if is_secret("", item) else repr(item)
            raise ValueError(f"{shown} is not KEY=VALUE")
        out[key] = value
    return out


def masked_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret(k, v) else v) for k, v in env.items()}
