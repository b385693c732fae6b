"""``flightcheck init``: read an existing service and write a flightcheck.toml and smoke.yaml
that work with it — statically, nothing of the service is executed.

One module per question: :mod:`.dockerfile` (the image's base, port, command, installs),
:mod:`.launch` (how the process starts, on which port and address), :mod:`.routes` (framework,
app object, routes and their request/response shapes), :mod:`.providers` (provider SDK or HTTP
use, base-URL source, which functions reach the model), :mod:`.envreads` (variables read, at
import or later), :mod:`.smokegen` (the first cases), :mod:`.plan` (the decisions, each
explained) and :mod:`.writer` (files written only when flightcheck's own loaders accept them).
"""

from __future__ import annotations

from flightcheck.onboard.plan import Note, Plan, inspect
from flightcheck.onboard.writer import InitError, existing, write

__all__ = ["InitError", "Note", "Plan", "existing", "inspect", "render", "write"]


def render(plan: Plan) -> str:
    """What init found and what it could not decide, for the terminal."""
    lines = [f"flightcheck init: {plan.root} — read statically, nothing of the service was executed", "",
             "found"]
    width = max((len(t) for t, _ in plan.found), default=10)
    for topic, text in plan.found:
        lines.append(f"  {topic:<{width}}  {text}")
    if plan.undecided:
        lines += ["", "could not decide (review these before trusting a green run)"]
        for note in plan.undecided:
            lines.append(f"  - {note.what}")
            if note.fix:
                lines.append(f"    fix: {note.fix}")
    return "\n".join(lines)
