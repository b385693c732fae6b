"""health-poll: does the service become healthy, and within what Cloud Run's probes allow?

Cloud Run's startup probe waits ``initial_delay_s``, then probes every ``period_s`` (each
probe bounded by ``timeout_s``) and gives the instance up after ``failure_threshold`` failed
periods: the window is ``initial_delay + period × failure_threshold``. flightcheck keeps that
verdict but detects readiness much sooner than one probe per period: it polls with a short
interval that starts at a few milliseconds and backs off to at most min(period, 30 ms),
resetting when the failure changes (connection refused → HTTP 503 means the service is
progressing). A watcher stops everything the moment the service dies. When the window runs
out the poll goes on for a bounded grace period, so the report can say how long startup
actually took and which probe settings would have let it through.

Pure: it knows only the ``Running`` protocol (an endpoint and ``status()``/``logs()``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio
import httpx

from flightcheck.config import ProbeConfig
from flightcheck.context import Context
from flightcheck.results import Finding, Severity, StageName, StageResult, Status
from flightcheck.runtimes.base import Exit, Running, request_auth
from flightcheck.secrets import excerpt

STAGE: StageName = "health-poll"
_MIN_INTERVAL_S = 0.005
_MAX_INTERVAL_S = 0.03
_BACKOFF = 1.5
_STATUS_INTERVAL_S = 0.05  # how often the watcher asks whether the service still runs
_MIN_GRACE_S = 5.0
_MAX_GRACE_S = 30.0
_MAX_REASONS = 20
_LOG_LINES = 200
_BODY_CHARS = 120  # of a failed probe's body, in its reason
# A startup path that answers 404 this long while the server is up does not exist: nothing
# will change by waiting out the window (unless strict Cloud Run semantics are asked for).
NOT_FOUND_S = 2.0
_CANDIDATES = ("/health", "/healthz", "/ready", "/readyz", "/health/ready", "/livez", "/")

StatusFn = Callable[[], Awaitable[Exit | None]]
Redact = Callable[[str], str]


def _same(text: str) -> str:
    return text


@dataclass
class Reason:
    """One distinct failure reason and how often it was seen (seconds since the poll began)."""

    text: str
    count: int
    first_s: float
    last_s: float

    def to_json(self) -> dict[str, object]:
        return {"reason": self.text, "count": self.count,
                "first_s": round(self.first_s, 3), "last_s": round(self.last_s, 3)}


@dataclass
class ProbeOutcome:
    """What polling one probe found."""

    path: str
    window_s: float
    ended: Literal["ready", "window", "exited", "not-found"] = "window"
    ready_after_s: float | None = None  # since the poll began; may exceed the window
    ready_at: float | None = None  # epoch seconds of the first success
    probes_sent: int = 0
    failed_probes: int = 0
    exit: Exit | None = None
    offset_s: float = 0.0  # how long after the service's start the poll began
    ended_after_s: float = 0.0
    reasons: list[Reason] = field(default_factory=list)
    _index: dict[str, Reason] = field(default_factory=dict, repr=False)

    @property
    def ready(self) -> bool:
        return self.ended == "ready"

    @property
    def within_window(self) -> bool:
        return self.ready_after_s is not None and self.ready_after_s <= self.window_s

    def record(self, text: str, at_s: float) -> None:
        self.failed_probes += 1
        if text not in self._index and len(self._index) >= _MAX_REASONS:
            text = "(other reasons)"  # bodies with timestamps must not grow the report
        reason = self._index.get(text)
        if reason is None:
            reason = self._index[text] = Reason(text, 0, at_s, at_s)
            self.reasons.append(reason)
        reason.count += 1
        reason.last_s = at_s

    def failed_periods(self, probe: ProbeConfig) -> int:
        """Failed probes as Cloud Run counts them: one per period before readiness."""
        end = self.ready_after_s if self.ready_after_s is not None else min(
            self.ended_after_s, self.window_s)
        return min(probe.failure_threshold,
                   max(0, math.ceil((end - probe.initial_delay_s) / probe.period_s)))

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path, "ended": self.ended, "window_s": self.window_s,
            "ready_after_s": None if self.ready_after_s is None else round(self.ready_after_s, 4),
            "ready_at": self.ready_at,
            "poll_began_s": round(self.offset_s, 4),
            # Ready at the very first probe: the true startup time is at most ready_after_s.
            "ready_on_first_probe": self.ready and self.probes_sent == 1,
            "within_window": self.within_window, "probes_sent": self.probes_sent,
            "failed_probes": self.failed_probes,
            "reasons": [r.to_json() for r in self.reasons],
            "exit": None if self.exit is None else {"kind": self.exit.kind, "code": self.exit.code,
                                                    "detail": self.exit.detail},
        }


async def _probe_once(
    client: httpx.AsyncClient, url: str, timeout_s: float, redact: Redact = _same
) -> str | None:
    """None on success (HTTP 200-399, as Cloud Run counts it), else why it failed (the body
    redacted before it is cut short)."""
    try:
        with anyio.fail_after(timeout_s):
            resp = await client.get(url, timeout=timeout_s)
    except (TimeoutError, httpx.TimeoutException):
        return f"timeout: no answer within {timeout_s:g} s"
    except httpx.ConnectError as exc:
        return _connect_reason(exc)
    except httpx.RemoteProtocolError:
        return "connection closed without a response"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if 200 <= resp.status_code < 400:
        return None
    body = excerpt(resp.text, _BODY_CHARS, redact, one_line=True)
    return f"HTTP {resp.status_code}" + (f": {body}" if body else "")


def _connect_reason(exc: BaseException) -> str:
    """httpx says "All connection attempts failed"; the OS error underneath says why."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return "connection refused"
        if isinstance(seen, OSError) and seen.strerror:
            return f"connect error: {seen.strerror}"
        seen = seen.__cause__ or seen.__context__
    return f"connect error: {exc}"


def _kind(reason: str) -> str:
    return reason.split(":", 1)[0]


async def wait_ready(
    endpoint: str,
    probe: ProbeConfig,
    *,
    status: StatusFn | None = None,
    grace_s: float = 0.0,
    started_at: float | None = None,
    redact: Redact = _same,
    fail_fast_404: bool = False,
    auth: httpx.Auth | None = None,
) -> ProbeOutcome:
    """Poll ``probe.path`` until it succeeds, the window (+ ``grace_s``) ends, or the service
    dies (``status`` returns an Exit). Never raises for a failing service. ``fail_fast_404``:
    stop (ended "not-found") once the path has answered only 404 for NOT_FOUND_S — the server
    is up, the path does not exist.

    Times count from ``started_at`` (epoch seconds the service started, as Cloud Run counts
    its window from the container's start), or from now when it is unknown.
    """
    url = endpoint.rstrip("/") + probe.path
    outcome = ProbeOutcome(path=probe.path, window_s=probe.window_s)
    deadline = probe.window_s + grace_s
    started = time.perf_counter()
    if started_at is not None:
        started -= max(0.0, time.time() - started_at)
    outcome.offset_s = time.perf_counter() - started

    def elapsed() -> float:
        return time.perf_counter() - started

    async with (
        httpx.AsyncClient(trust_env=False, follow_redirects=False, auth=auth) as client,
        anyio.create_task_group() as tg,
    ):
        if status is not None:

            async def watch() -> None:
                while True:
                    try:
                        outcome.exit = await status()
                    except Exception:  # a runtime that cannot tell must not stop the poll
                        return
                    if outcome.exit is not None:
                        outcome.ended = "exited"
                        tg.cancel_scope.cancel()
                        return
                    await anyio.sleep(_STATUS_INTERVAL_S)

            tg.start_soon(watch)
        await anyio.sleep(max(0.0, probe.initial_delay_s - elapsed()))
        interval, last_kind = _MIN_INTERVAL_S, ""
        cap = min(probe.period_s, _MAX_INTERVAL_S)
        not_found_since: float | None = None
        while outcome.probes_sent == 0 or elapsed() < deadline:
            at = elapsed()
            reason = await _probe_once(client, url, probe.timeout_s, redact)
            outcome.probes_sent += 1
            if reason is None:
                outcome.ready_after_s, outcome.ready_at = elapsed(), time.time()
                outcome.ended = "ready"
                break
            outcome.record(reason, at)
            if reason.startswith("HTTP 404"):
                not_found_since = at if not_found_since is None else not_found_since
                if fail_fast_404 and at - not_found_since >= NOT_FOUND_S:
                    outcome.ended = "not-found"
                    break
            else:
                not_found_since = None
            kind = _kind(reason)
            # A new kind of failure means the service moved on: look closely again.
            interval = _MIN_INTERVAL_S if kind != last_kind else min(cap, interval * _BACKOFF)
            last_kind = kind
            await anyio.sleep(max(0.0, min(interval, deadline - elapsed())))
        tg.cancel_scope.cancel()
    outcome.ended_after_s = elapsed()
    return outcome


async def check_liveness(endpoint: str, probe: ProbeConfig, *, status: StatusFn | None = None,
                         redact: Redact = _same, auth: httpx.Auth | None = None
                         ) -> ProbeOutcome:
    """Liveness once the service is up: fails only after ``failure_threshold`` failures in a
    row, like Cloud Run, but retried quickly instead of once per period."""
    url = endpoint.rstrip("/") + probe.path
    outcome = ProbeOutcome(path=probe.path, window_s=probe.window_s)
    started = time.perf_counter()
    await anyio.sleep(probe.initial_delay_s)
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, auth=auth) as client:
        for attempt in range(probe.failure_threshold):
            if status is not None and (exit_ := await status()) is not None:
                outcome.exit, outcome.ended = exit_, "exited"
                return outcome
            reason = await _probe_once(client, url, probe.timeout_s, redact)
            outcome.probes_sent += 1
            if reason is None:
                outcome.ended = "ready"
                outcome.ready_after_s = time.perf_counter() - started
                outcome.ready_at = time.time()
                return outcome
            outcome.record(reason, time.perf_counter() - started)
            if attempt + 1 < probe.failure_threshold:
                await anyio.sleep(min(probe.period_s, 0.2))
    return outcome


def describe_exit(exit_: Exit) -> str:
    """How a service ended, as the tail of a sentence: 'exited with code 1', ..."""
    if exit_.oom:
        return "was OOM-killed (out of memory)" + (f": {exit_.detail}" if exit_.detail else "")
    if exit_.kind == "signal":
        return f"was killed by signal {exit_.code}" + (f" ({exit_.detail})" if exit_.detail else "")
    return f"exited with code {exit_.code}" + (f" ({exit_.detail})" if exit_.detail else "")


def _reasons_text(outcome: ProbeOutcome) -> str:
    if not outcome.reasons:
        return "no probe failed"
    return "; ".join(f"{r.text} ×{r.count}" for r in outcome.reasons[:5]) + (
        f"; +{len(outcome.reasons) - 5} more" if len(outcome.reasons) > 5 else ""
    )


def _suggest(probe: ProbeConfig, needed_s: float) -> str:
    """Probe settings that would have admitted a startup of ``needed_s`` (with 50% headroom)."""
    target = needed_s * 1.5 - probe.initial_delay_s
    threshold = max(probe.failure_threshold, math.ceil(target / probe.period_s))
    return (f"set [health.startup] failure_threshold = {threshold} (window "
            f"{probe.initial_delay_s + threshold * probe.period_s:g} s), or make startup faster")


async def run(ctx: Context) -> StageResult:
    running = ctx.running(STAGE)
    cfg = ctx.config.health
    res = ctx.result(STAGE)
    startup = cfg.startup
    # Long enough to measure a startup that is a bit too slow, bounded for one that never ends.
    grace = min(max(startup.window_s, _MIN_GRACE_S), _MAX_GRACE_S)
    ctx.log(STAGE, f"startup probe {startup.path}: window {startup.window_s:g} s "
                   f"(delay {startup.initial_delay_s:g} + {startup.period_s:g} s × "
                   f"{startup.failure_threshold})")
    outcome = await wait_ready(running.endpoint, startup, status=running.status, grace_s=grace,
                               started_at=running.started_at, redact=ctx.redactor,
                               fail_fast_404=not cfg.strict_cloud_run,
                               auth=request_auth(running))
    res.details["startup"] = _redacted(ctx, outcome.to_json())
    res.measure("startup_window_s", startup.window_s, "s")
    res.measure("time_to_ready_s", None if outcome.ready_after_s is None
                else round(outcome.ready_after_s, 4), "s")
    res.measure("probes_sent", outcome.probes_sent)
    res.measure("failed_probes", outcome.failed_probes)
    res.measure("failed_periods", outcome.failed_periods(startup))
    if outcome.ready and outcome.ready_after_s is not None:
        # When Cloud Run's own once-per-period probe would have seen it ready.
        periods = outcome.failed_periods(startup)
        res.measure("cloud_run_ready_s", startup.initial_delay_s + periods * startup.period_s, "s")

    if outcome.ended == "exited" and outcome.exit is not None:
        res.status = Status.FAIL
        res.summary = f"the service {describe_exit(outcome.exit)} while starting"
        await _fail(ctx, res, running, "health.oom" if outcome.exit.oom else "health.exited",
                    "oom" if outcome.exit.oom else "crash",
                    f"the service {describe_exit(outcome.exit)} after {outcome.probes_sent} "
                    f"probe(s) of {startup.path}; probe failures: {_reasons_text(outcome)}",
                    "raise [run].memory_limit" if outcome.exit.oom
                    else "read the log tail below: the service crashed at startup")
        return res
    if outcome.ended == "not-found":
        res.status = Status.FAIL
        res.summary = (f"{startup.path} answers 404 while the server is up: the startup probe "
                       "path does not exist")
        answering = await _answering_paths(running.endpoint, {cfg.liveness.path, *_CANDIDATES},
                                           min(startup.timeout_s, 2.0), request_auth(running))
        hint = (f"; these paths answer: {', '.join(answering)}" if answering
                else "; none of the usual health paths answers either")
        await _fail(ctx, res, running, "health.startup-not-found", "probe",
                    f"{res.summary}: every probe for {outcome.ended_after_s:.1f} s answered 404 "
                    f"({outcome.probes_sent} probes){hint}",
                    f"set [health.startup].path to the path your service answers once it is "
                    f"ready{' (e.g. ' + answering[0] + ')' if answering else ''}; Cloud Run "
                    "would retry it until the window ends and then restart the instance "
                    "([health].strict_cloud_run = true waits like Cloud Run)")
        return res
    first = outcome.ready and outcome.probes_sent == 1
    if first and not outcome.within_window:
        # The poll began after the window had passed (an earlier stage took that long): the
        # service was ready at the first look, but when it became ready is unknown.
        res.status = Status.WARN
        res.findings.append(Finding(
            code="health.late-poll", category="probe", severity=Severity.WARNING,
            message=f"the first probe, {outcome.offset_s:.2f} s after the service started, "
            f"already succeeded; whether startup fit the {startup.window_s:g} s window is "
            "unknown",
            fix="nothing to fix in the service; the poll began late",
        ))
    elif not outcome.ready or not outcome.within_window:
        res.status = Status.FAIL
        if outcome.ready and outcome.ready_after_s is not None:
            res.summary = (f"ready after {outcome.ready_after_s:.2f} s, longer than the startup "
                           f"probe window of {startup.window_s:g} s")
            fix = _suggest(startup, outcome.ready_after_s)
        else:
            res.summary = (f"{startup.path} never succeeded within "
                           f"{startup.window_s + grace:g} s (window {startup.window_s:g} s)")
            fix = (f"make {startup.path} answer 200 once the service is ready "
                   "(see the last failure and the log tail), or lengthen the window")
        await _fail(ctx, res, running, "health.startup-timeout", "probe",
                    f"{res.summary}; {outcome.probes_sent} probes, failures: "
                    f"{_reasons_text(outcome)}", fix)
        return res

    assert outcome.ready_after_s is not None
    ctx.log(STAGE, f"ready after {outcome.ready_after_s * 1000:.0f} ms "
                   f"({outcome.probes_sent} probes)")
    live = await check_liveness(running.endpoint, cfg.liveness, status=running.status,
                                redact=ctx.redactor, auth=request_auth(running))
    res.details["liveness"] = _redacted(ctx, live.to_json())
    res.measure("liveness_ok", live.ready)
    if not live.ready:
        res.status = Status.FAIL
        what = (f"the service {describe_exit(live.exit)}" if live.exit
                else f"liveness probe {cfg.liveness.path} failed {live.failed_probes} times")
        res.summary = f"ready after {outcome.ready_after_s:.2f} s, but {what}"
        await _fail(ctx, res, running, "health.liveness", "probe",
                    f"{res.summary}: {_reasons_text(live)}",
                    f"make {cfg.liveness.path} answer 200 while the service runs "
                    "(Cloud Run restarts the instance otherwise)")
        return res
    res.summary = (f"ready {'by' if first else 'after'} {outcome.ready_after_s * 1000:.0f} ms "
                   f"(window {startup.window_s:g} s, {outcome.probes_sent} probes); "
                   f"liveness {cfg.liveness.path} ok")
    return res


async def _answering_paths(endpoint: str, paths: set[str], timeout_s: float,
                           auth: httpx.Auth | None = None) -> list[str]:
    """Which of ``paths`` answer 2xx/3xx (a hint for the startup probe path)."""
    found: list[str] = []
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, auth=auth) as client:
        for path in sorted(paths, key=lambda p: (p == "/", p)):
            try:
                resp = await client.get(endpoint.rstrip("/") + path, timeout=timeout_s)
            except httpx.HTTPError:
                continue
            if 200 <= resp.status_code < 400:
                found.append(path)
    return found


def _redacted(ctx: Context, data: dict[str, object]) -> dict[str, object]:
    for reason in data.get("reasons", []):  # type: ignore[union-attr]
        if isinstance(reason, dict):
            reason["reason"] = ctx.redactor(str(reason["reason"]))
    return data


_DIGITS = re.compile(r"\d+")


def compact_log_tail(text: str, keep: int = 15) -> str:
    """The last ``keep`` lines, with runs of lines that differ only in numbers (probe access
    logs, timestamps) collapsed, so the lines that explain a failure stay visible."""
    out: list[str] = []
    prev_key, repeats = None, 0
    for line in text.splitlines():
        key = _DIGITS.sub("#", line)
        if key == prev_key:
            repeats += 1
            continue
        if repeats:
            out.append(f"  … {repeats} more like the line above")
            repeats = 0
        out.append(line)
        prev_key = key
    if repeats:
        out.append(f"  … {repeats} more like the line above")
    return "\n".join(out[-keep:])


async def _fail(ctx: Context, res: StageResult, running: Running, code: str, category: str,
                message: str, fix: str) -> None:
    logs = ctx.redactor(await running.logs(_LOG_LINES)).rstrip()
    res.details["logs_tail"] = logs
    tail = compact_log_tail(logs)
    res.findings.append(Finding(
        code=code, category=category, message=ctx.redactor(message)
        + (f"\nlast log lines:\n{tail}" if tail else "\n(the service logged nothing)"),
        fix=fix,
    ))
