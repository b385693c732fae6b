"""The seed's lessons as measured gates: each judges evidence the stages measured.

``evaluate`` runs every lesson over one run's results (what ``flightcheck ci`` puts in the
report's ``lessons``); each lesson is also its own command (``flightcheck cost`` …) over a saved
report. ``rollback`` (the canary's decision) belongs to the deploy stage. This package's
``__init__`` imports nothing at import time: config.py reads ``lessons.defaults``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flightcheck.lessons.evidence import Evidence
    from flightcheck.results import LessonResult


def evaluate(ev: Evidence) -> list[LessonResult]:
    """Every lesson over one run, in report order."""
    from flightcheck.lessons import cost, monitoring, parity, quality, readiness, resources

    done = [parity.evaluate(ev), resources.evaluate(ev), cost.evaluate(ev), quality.evaluate(ev),
            monitoring.evaluate(ev)]
    return [*done, readiness.evaluate(ev, done)]
