"""build: the image builds, and the modules the service needs import inside it.

Selects the runtime (``--runtime``/``[run].runtime``; auto: docker when a daemon answers, else
process), removes leftovers of crashed earlier runs, builds the image (docker: the build
context is ``[service].source``, the Dockerfile ``[service].dockerfile``), then imports
``[service].import_check`` inside the image with the network off — a dependency missing from
the image fails here, naming the module and the distribution that likely provides it, not at
the first request in production. Then lint's type gate runs again with the packages the image
installed (lint/deptypes.py): a call into a dependency that fails whatever the input, against
the version the image pinned, fails the stage (FC901–FC903). Leaves ``ctx.artifacts["runtime"]``
and ``["image"]``.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from flightcheck import __version__
from flightcheck.context import Context
from flightcheck.errors import ConfigError, StageError
from flightcheck.lint import deptypes
from flightcheck.lint.cache import digest, disabled_by_env, key_of
from flightcheck.lint.engine import enabled_codes, find_tool, own_python_files, tool_id
from flightcheck.lint.rules import RULES
from flightcheck.results import Finding, Severity, StageName, StageResult, Status
from flightcheck.runtimes import select_runtime
from flightcheck.runtimes.base import BuildFailed, Image, Runtime

STAGE: StageName = "build"
IMPORT_TIMEOUT_S = 60.0
_LOG_LINES = 30

# Import names whose distribution is called something else (the common surprises).
_DISTRIBUTIONS = {
    "yaml": "PyYAML",
    "PIL": "Pillow",
    "cv2": "opencv-python",
    "sklearn": "scikit-learn",
    "bs4": "beautifulsoup4",
    "dotenv": "python-dotenv",
    "jwt": "PyJWT",
    "dateutil": "python-dateutil",
    "google.genai": "google-genai",
    "google.generativeai": "google-generativeai",
    "google.cloud.run_v2": "google-cloud-run",
    "OpenSSL": "pyOpenSSL",
    "Crypto": "pycryptodome",
    "magic": "python-magic",
    "multipart": "python-multipart",
    "docx": "python-docx",
    "attr": "attrs",
    "pkg_resources": "setuptools",
}
_MISSING = re.compile(r"No module named '([^']+)'")
_PARSE_LINE = re.compile(r"(?:parse error|error) (?:on )?line (\d+)", re.I)


def distribution_for(module: str) -> str:
    """The PyPI distribution that most likely provides ``module`` (a guess for the fix hint)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        hit = _DISTRIBUTIONS.get(".".join(parts[:n]))
        if hit:
            return hit
    return parts[0].replace("_", "-")


def _requested_runtime(ctx: Context) -> str:
    return ctx.runtime_name if ctx.runtime_name != "auto" else ctx.config.run.runtime


async def prepare(ctx: Context) -> None:
    """Before any stage runs: the Dockerfile exists (unless the process runtime, which needs
    none, was asked for), and what the service will see is decided once — its model (fake
    model server or real provider), so that every stage that runs it, the import check
    included, gives it the same environment."""
    from flightcheck.stages import smoke

    if _requested_runtime(ctx) != "process":
        svc = ctx.config.service
        path = ctx.config.source_dir / svc.dockerfile
        if not path.is_file():
            raise ConfigError(
                f"no Dockerfile at {path}",
                why=f"[service].dockerfile ({svc.dockerfile!r}) names no file in the build "
                f"context {ctx.config.source_dir}",
                fix=f"add {svc.dockerfile}, point [service].dockerfile at the right file, or run "
                "without an image: --runtime process",
                repro=ctx.repro(STAGE).local,
            )
    await smoke.prepare_model(ctx)


async def run(ctx: Context) -> StageResult:
    res = ctx.result(STAGE)
    svc = ctx.config.service
    runtime = select_runtime(
        _requested_runtime(ctx),
        redactor=ctx.redactor,
        on_log=lambda line: _progress(ctx, line),
        name=svc.name,
        command=svc.command,
        pythonpath=[ctx.config.resolve(p) for p in svc.pythonpath],
    )
    ctx.artifacts["runtime"] = runtime
    res.details["runtime"] = runtime.name
    if runtime.name == "process" and not svc.command:
        raise StageError(
            "the process runtime does not know how to start the service",
            why="[service].command is empty",
            fix='set [service].command in flightcheck.toml, e.g. command = ["python", "-m", '
            '"app"] (and [service].pythonpath), or use --runtime docker',
        )

    removed = await runtime.cleanup_stale()
    if removed:
        ctx.log(STAGE, f"removed {removed} leftover(s) of earlier runs that did not clean up")
    res.details["stale_removed"] = removed

    source = ctx.config.source_dir
    try:
        image = await runtime.build(source, svc.dockerfile)
    except BuildFailed as exc:
        return _build_failed(ctx, res, exc, runtime)
    ctx.artifacts["image"] = image
    _measure(res, image)

    # With the environment the service gets: a service that reads its key at import must
    # not fail here when it will have one.
    problem = await runtime.import_check(image, list(svc.import_check), IMPORT_TIMEOUT_S,
                                         env=ctx.service_environment())
    if problem is not None:
        _import_failed(ctx, res, problem, runtime)
        return res
    what = "source tree" if runtime.name == "process" else "image"
    res.summary = (
        f"{what} {image.ref} ready in {image.build_seconds:.1f} s"
        + (" (cached)" if image.cached else "")
        + (f"; imports ok: {', '.join(svc.import_check)}" if svc.import_check else "")
    )
    res.summary += "; " + await _dependency_calls(ctx, res, runtime, image)
    return res


_DEPENDENCY_CODES = frozenset({"FC901", "FC902", "FC903"})


async def _dependency_calls(ctx: Context, res: StageResult, runtime: Runtime, image: Image) -> str:
    """lint's type gate again, now with the packages the image installed: calls into them
    that fail whatever the input fail the build (lint/deptypes.py). Returns the summary part;
    "not checked" says why, never "ok"."""
    cfg = ctx.config
    codes = _DEPENDENCY_CODES & enabled_codes(cfg.lint) if cfg.lint.enabled else frozenset()
    if not codes:
        res.details["dependency_calls"] = "off: the type category is disabled in [lint]"
        return "calls into dependencies not checked ([lint] turns the type gate off)"
    ty = find_tool("ty")
    files = own_python_files(cfg.source_dir, [cfg.resolve(p) for p in cfg.lint.paths], cfg.lint)
    if ty is None or not files:
        why = "ty not found (pip install flightcheck brings it)" if ty is None else "no Python files"
        res.details["dependency_calls"] = f"not checked: {why}"
        return f"calls into dependencies not checked: {why}"
    started = time.perf_counter()
    key = _cache_key(image, ty, files, codes) if cfg.lint.cache and not disabled_by_env() else None
    calls = deptypes.cached(key) if key else None
    from_cache = calls is not None
    if calls is None:
        with tempfile.TemporaryDirectory(prefix="flightcheck-deps-", dir=_scratch()) as tmp:
            env = await runtime.dependency_env(image, Path(tmp))
            if isinstance(env, str):
                res.details["dependency_calls"] = f"not checked: {env}"
                return f"calls into dependencies not checked: {env}"
            try:
                calls = await deptypes.check(ty, cfg.source_dir.resolve(), files, env.python,
                                             env.version, list(env.sites))
            except RuntimeError as exc:
                res.details["dependency_calls"] = f"not checked: {exc}"
                return f"calls into dependencies not checked: {exc}"
        if key:
            deptypes.remember(key, calls)
    how = "the same image and code as a checked build (cache)" if from_cache else "checked by ty"
    seconds = time.perf_counter() - started
    res.measure("dependency_check_seconds", round(seconds, 3), "s")
    res.measure("dependency_check_files", len(files))
    res.measure("dependency_check_cached", from_cache)
    failing = [c for c in calls if c.code in codes]
    res.measure("dependency_calls_failing", len(failing))
    res.details["dependency_calls"] = "checked"
    ctx.log(STAGE, f"calls into the image's packages: {len(files)} file(s), {how}, in "
            f"{seconds:.1f} s; {len(failing)} fail whatever the input")
    for c in failing:
        res.findings.append(Finding(code=c.code, category="type", message=c.message, file=c.rel,
                                    line=c.line, col=c.col, fix=RULES[c.code].fix))
    if failing:
        res.status = Status.FAIL
        return (f"{len(failing)} call(s) into the installed dependencies fail whatever the "
                f"input (first: {failing[0].rel}:{failing[0].line} {failing[0].message})")
    return f"calls into the installed dependencies ok ({len(files)} file(s), ty)"


def _cache_key(image: Image, ty: str, files: dict[str, str], codes: frozenset[str]) -> str | None:
    """What the verdict depends on: the image by content (none: no cache), ty, the project's
    files by content, the codes. None when a file cannot be read (the check reports it)."""
    if not image.digest:
        return None
    try:
        contents = sorted((rel, digest(Path(path).read_bytes())) for path, rel in files.items())
    except OSError:
        return None
    return key_of(__version__, image.digest, tool_id(ty), sorted(codes), contents)


_SHM = Path("/dev/shm")
_SHM_ROOM = 1 << 30  # an ML image's sources run to hundreds of MB; a container's /dev/shm is 64 MB


def _scratch() -> str | None:
    """Where the image's package sources go: thousands of small files, 10x faster to write to
    tmpfs than to a disk, but only when the tmpfs has room (else the system's temp dir)."""
    try:
        st = os.statvfs(_SHM)
    except OSError:
        return None
    room = st.f_bavail * st.f_frsize
    return str(_SHM) if room >= _SHM_ROOM and os.access(_SHM, os.W_OK) else None


_NOISE = ("--->", "Removing intermediate container")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _progress(ctx: Context, line: str) -> None:
    """Build output as progress, minus the classic builder's layer-id chatter and terminal
    escapes (the full log is kept for failures)."""
    text = _ANSI.sub("", line).strip()
    if text and not text.startswith(_NOISE):
        ctx.log(STAGE, text)


def _measure(res: StageResult, image: Image) -> None:
    res.measure("build_seconds", round(image.build_seconds, 3), "s")
    res.measure("image_size_bytes", image.size_bytes, "bytes")
    res.measure("cached", image.cached)
    res.details["image"] = image.ref  # docker: flightcheck/<service>:<context digest>


def _build_failed(ctx: Context, res: StageResult, exc: BuildFailed, runtime: Runtime) -> StageResult:
    svc = ctx.config.service
    dockerfile = svc.dockerfile
    message = ctx.redactor(str(exc))
    tail = ctx.redactor(exc.log_tail)
    res.status = Status.FAIL
    if "no Dockerfile" in message:
        res.summary = f"no Dockerfile at {ctx.config.source_dir / dockerfile}"
        fix = (
            f"add {dockerfile} to {ctx.config.source_dir}, point [service].dockerfile at the "
            "right file, or run without an image: --runtime process"
        )
        res.findings.append(
            Finding(code="build.dockerfile-missing", category="build", message=message,
                    file=dockerfile, fix=fix)
        )
        return res
    line = _PARSE_LINE.search(message)
    if "parse error" in message or "unknown instruction" in message:
        res.summary = f"{dockerfile} does not parse"
        res.findings.append(
            Finding(code="build.dockerfile-syntax", category="build", message=message,
                    file=dockerfile, line=int(line.group(1)) if line else None,
                    fix="fix the instruction at that line (https://docs.docker.com/reference/dockerfile/)")
        )
        return res
    res.summary = f"{exc.step or 'the build'} failed" if runtime.name == "docker" else message
    body = message + (f"\nlast {_LOG_LINES} build log lines:\n{tail}" if tail else "")
    res.findings.append(
        Finding(
            code="build.step-failed" if exc.step else "build.failed",
            category="build",
            message=body,
            file=dockerfile if runtime.name == "docker" else None,
            fix="rerun the build locally to iterate on that step: "
            f"docker build -f {dockerfile} {ctx.config.source_dir}",
        )
    )
    res.details["failing_step"] = exc.step
    res.details["log_tail"] = tail
    return res


def _import_failed(ctx: Context, res: StageResult, problem: str, runtime: Runtime) -> None:
    res.status = Status.FAIL
    missing = list(dict.fromkeys(_MISSING.findall(problem)))
    where = "inside the image" if runtime.name == "docker" else "with the process runtime's Python"
    if missing:
        dists = [distribution_for(m) for m in missing]
        res.summary = f"{where}, import fails: no module {', '.join(repr(m) for m in missing)}"
        for module, dist in zip(missing, dists, strict=True):
            if runtime.name == "docker":
                fix = (f"add {dist} to the image's dependencies (requirements.txt / pyproject "
                       "dependencies installed by the Dockerfile) and rebuild")
            else:
                fix = f"install it into the interpreter flightcheck runs with: pip install {dist}"
            if module.split(".")[0] in {m.split(".")[0] for m in ctx.config.service.import_check}:
                fix = (f"if {module!r} is your service's own module, check [service].import_check "
                       "and that the Dockerfile (or [service].pythonpath) brings it in; if it is "
                       f"a dependency, {fix}")
            res.findings.append(
                Finding(
                    code="build.import",
                    category="dependency",
                    message=f"{where}: No module named {module!r} (likely distribution: {dist})"
                    f"\n{problem}",
                    fix=fix,
                )
            )
    else:
        res.summary = f"{where}, the critical imports fail"
        res.findings.append(
            Finding(code="build.import", category="dependency", severity=Severity.ERROR,
                    message=problem,
                    fix="run the import by hand in the image to see the full traceback: "
                    + _by_hand(ctx, runtime))
        )
    res.details["import_error"] = problem


def _by_hand(ctx: Context, runtime: Runtime) -> str:
    """The import check as a command to paste, with the real image tag."""
    image = ctx.artifacts.get("image")
    modules = ", ".join(ctx.config.service.import_check)
    if runtime.name == "process" or not isinstance(image, Image):
        return f"python -c 'import {modules}' (in {ctx.config.source_dir})"
    return f"docker run --rm --entrypoint python {image.ref} -c 'import {modules}'"
