"""The error hierarchy. Every error a user can see says what failed, why, what to do, and
the command that reproduces it; the CLI prints them without a traceback."""

from __future__ import annotations


class FlightcheckError(Exception):
    """Base of every error flightcheck raises on purpose.

    ``what`` failed, ``why`` it failed, ``fix`` says what to do, ``repro`` is the command
    that reproduces it. ``exit_code`` is what the CLI exits with (2: usage/config).
    """

    exit_code: int = 1

    def __init__(
        self, what: str, *, why: str = "", fix: str = "", repro: str = ""
    ) -> None:
        super().__init__(what)
        self.what = what
        self.why = why
        self.fix = fix
        self.repro = repro

    def render(self) -> str:
        lines = [f"error: {self.what}"]
        if self.why:
            lines.append(f"  why: {self.why}")
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        if self.repro:
            lines.append(f"  reproduce: {self.repro}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


class ConfigError(FlightcheckError):
    """flightcheck.toml (or an override) is missing, malformed or holds an impossible value."""

    exit_code = 2


class UsageError(FlightcheckError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


class RuntimeUnavailable(FlightcheckError):
    """The requested runtime (Docker daemon, cgroup, ...) cannot be used on this machine."""

    exit_code = 2


class StageError(FlightcheckError):
    """A stage could not run at all (as opposed to running and finding a failure)."""
