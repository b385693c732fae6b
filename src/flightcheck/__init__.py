"""flightcheck: a portable preflight-and-deploy pipeline for AI (LLM-backed) web services."""

from flightcheck.errors import (
    ConfigError,
    FlightcheckError,
    RuntimeUnavailable,
    StageError,
)
from flightcheck.results import Finding, Measurement, Repro, Severity, StageResult, Status

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Finding",
    "FlightcheckError",
    "Measurement",
    "Repro",
    "RuntimeUnavailable",
    "Severity",
    "StageError",
    "StageResult",
    "Status",
    "__version__",
]
