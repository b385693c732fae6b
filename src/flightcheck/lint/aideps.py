"""AI dependencies: provider SDKs installed without a pin (FC211), and provider APIs that the
declared SDK version no longer has (FC212, decided here from the versions the declarations
allow; the workers find the calls).

Provider SDKs break their API across majors (openai 0.x → 1.x removed ``openai.ChatCompletion``)
and change behaviour in minors; an image built next month from ``openai`` or ``openai>=1``
is not the image that passed CI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from flightcheck.lint.deps import Spec
from flightcheck.lint.textscan import Raw

_AI_SDKS = re.compile(
    r"^(?:openai|anthropic|google-genai|google-generativeai|google-cloud-aiplatform|litellm|"
    r"langchain(?:-[a-z0-9-]+)?|langgraph|llama-index(?:-[a-z0-9-]+)?|groq|mistralai|cohere|"
    r"together|instructor|vertexai)$"
)
# An upper bound, an exact pin, a compatible-release clause or a direct reference: the version
# cannot move past what was tested (at least not across a major).
_BOUNDED = re.compile(r"==|~=|<|@")
# Versions probed to ask "may this specifier install openai 1.x or later?"
_V1_PROBES = ("1.0.0", "1.30.0", "1.99.0", "2.0.0", "3.0.0", "99.0.0")


def unpinned(specs: Iterable[Spec], root: Path) -> dict[str, list[Raw]]:
    """FC211 at each declaration of an AI SDK that installs whatever is newest."""
    out: dict[str, list[Raw]] = {}
    for spec in specs:
        if not spec.main or spec.locked or not _AI_SDKS.match(spec.dist):
            continue
        if _BOUNDED.search(spec.specifier):
            continue
        rel = Path(os.path.relpath(spec.file, root)).as_posix()
        if rel.startswith("../"):
            continue  # the project's declarations, read for imports, but not being linted
        what = f"{spec.dist}{spec.specifier}" if spec.specifier else spec.dist
        out.setdefault(rel, []).append(Raw(
            "FC211", spec.line, 1,
            f"{what} is not pinned: the next build installs whatever {spec.dist} release is "
            "newest, API changes included"))
    return out


def without_legacy_api(specs: Iterable[Spec]) -> frozenset[str]:
    """SDKs whose declared versions may lack their pre-1.0 API: {"openai"} unless every
    declaration of openai stays below 1.0 (then the old calls still work)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    openai = [s for s in specs if s.dist == "openai"]
    if not openai:
        return frozenset()  # not declared: FC201 says so; which version is anyone's guess
    for spec in openai:
        text = spec.specifier
        if text == "@":
            continue  # a direct reference: unknown version, assume the old API is intended
        try:
            allowed = SpecifierSet(text)
        except InvalidSpecifier:
            continue
        # the versions the clauses name (an exact pin) and a spread of 1.x and later
        named = [c.version.replace(".*", ".0") for c in allowed]
        candidates = [v for v in (*named, *_V1_PROBES) if _major(v) >= 1]
        if any(allowed.contains(v, prereleases=True) for v in candidates):
            return frozenset({"openai"})
    return frozenset()


def _major(version: str) -> int:
    m = re.match(r"\s*(\d+)", version)
    return int(m.group(1)) if m else 0
