"""The ``local`` deploy target: a Cloud Run on this machine.

A run_v2 REST server (:mod:`.api`, :mod:`.control`) that runs every revision as a real container
on the docker runtime (:mod:`.runner`; the process runtime without a daemon), pulled by digest
from the local registry (``127.0.0.1:5000``, ``FLIGHTCHECK_LOCAL_REGISTRY``), and serves each
service URL and tag URL on 127.0.0.1 through a traffic-splitting proxy that records status and
latency per revision (:mod:`.proxy`, :mod:`.metrics`); a private service's URLs admit only
invokers with an ID token its Google-shaped issuer minted (:mod:`.identity`). It runs in the
background
(:mod:`.lifecycle`): ``ensure_running(state_dir)`` gives its API endpoint, ``stop(state_dir)``
removes everything it started.
"""

from __future__ import annotations

import os

from flightcheck.cloudrun.local.lifecycle import (
    DEFAULT_STATE_DIR,
    Status,
    containers,
    endpoint,
    ensure_running,
    status,
    stop,
)

DEFAULT_REGISTRY = "127.0.0.1:5000"
REVISION_HEADER = "x-flightcheck-revision"


def registry() -> str:
    """Where the local target's images go: ``FLIGHTCHECK_LOCAL_REGISTRY`` or 127.0.0.1:5000."""
    return os.environ.get("FLIGHTCHECK_LOCAL_REGISTRY") or DEFAULT_REGISTRY


__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_STATE_DIR",
    "REVISION_HEADER",
    "Status",
    "containers",
    "endpoint",
    "ensure_running",
    "registry",
    "status",
    "stop",
]
