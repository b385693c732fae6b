"""A deliberately small JSON path: ``$``, ``a.b``, ``items[0].name``, ``["odd.key"]``, ``[-1]``.

Enough to address one value in a service's response; no wildcards or filters, so a path
always names at most one value and a failed check can say exactly what it looked at.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""\.?(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)      # .name or a leading name
      | \[(?P<index>-?\d+)\]                      # [0], [-1]
      | \[(?P<q>["'])(?P<key>.*?)(?P=q)\]         # ["any key"]
    """,
    re.VERBOSE,
)

Segment = str | int


def parse_path(path: str) -> tuple[Segment, ...]:
    """``"question.answer"`` → ``("question", "answer")``. Raises ValueError when malformed."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    segments: list[Segment] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or (m.group("name") and pos > 0 and not text.startswith(".", pos)):
            raise ValueError(
                f"JSON path {path!r} is malformed at {text[pos:]!r}; "
                "write it like question.answer, items[0].name or [\"odd.key\"]"
            )
        if m.group("name") is not None:
            segments.append(m.group("name"))
        elif m.group("index") is not None:
            segments.append(int(m.group("index")))
        else:
            segments.append(m.group("key"))
        pos = m.end()
    return tuple(segments)


def resolve(doc: object, path: str) -> tuple[bool, object]:
    """(found, value) of ``path`` in ``doc``."""
    node = doc
    for seg in parse_path(path):
        if isinstance(seg, int):
            if not isinstance(node, list) or not -len(node) <= seg < len(node):
                return False, None
            node = node[seg]
        else:
            if not isinstance(node, dict) or seg not in node:
                return False, None
            node = node[seg]
    return True, node


def display(path: str) -> str:
    """The path as shown in messages: always rooted at ``$``."""
    text = path.strip()
    if text.startswith("$"):
        return text
    return "$" if not text else ("$" + text if text.startswith(("[", ".")) else "$." + text)
