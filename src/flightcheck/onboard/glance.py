"""What ``flightcheck init`` would start from in a directory, said in a few words for the
error a service command gives when flightcheck.toml is missing. Deliberately shallow (the
directory and its direct subdirectories, a bounded number of entries): that error may be
raised in a home directory, and it must stay instant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flightcheck.onboard.plan import find_dockerfile

_SKIP = {"node_modules", "venv", "env", "build", "dist", "site-packages", "__pycache__"}
_MAX_ENTRIES = 2000  # entries looked at before giving up on counting


@dataclass(frozen=True)
class Glance:
    dockerfile: str | None
    python_files: int
    partial: bool  # stopped counting after _MAX_ENTRIES

    @property
    def empty(self) -> bool:
        """Nothing init could read: not the service's directory."""
        return self.dockerfile is None and self.python_files == 0

    def __str__(self) -> str:
        docker = f"a {self.dockerfile}" if self.dockerfile else "no Dockerfile"
        n = self.python_files
        if n == 0:
            files = "no Python files" + (" among the first entries" if self.partial else "")
        else:
            files = f"{'at least ' if self.partial else ''}{n} Python file{'s' if n != 1 else ''}"
        return f"{docker} and {files}"


def glance(root: Path) -> Glance | None:
    """The Dockerfile and Python files at the top of ``root``; None when it cannot be read."""
    try:
        dockerfile = find_dockerfile(root)
        python, seen, more = 0, 0, False
        for entry in root.iterdir():
            seen += 1
            if entry.name.startswith(".") or entry.name in _SKIP:
                continue
            if entry.is_file() and entry.suffix == ".py":
                python += 1
            elif entry.is_dir():
                for child in entry.iterdir():
                    seen += 1
                    if seen > _MAX_ENTRIES:
                        more = True
                        break
                    if child.suffix == ".py" and child.is_file():
                        python += 1
            if seen > _MAX_ENTRIES:
                more = True
                break
    except OSError:
        return None
    return Glance(dockerfile, python, more)
