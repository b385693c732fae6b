"""The production-readiness report: the usual AI-service checklist, each item decided by
evidence from this run — never ticked by hand.

Every item is one of: decided by a stage's finding or measurement, by another lesson's verdict,
or by a config fact; each carries links to that evidence (a JSON pointer into the report and
the HTML anchor). An item whose evidence did not come into being (its stage was skipped or not
part of the run) is ``not-run``. Items no stage can check are ``manual`` with what to verify:
they are listed, never ticked.

Also here: the HTML report's per-stage timeline and memory-over-time chart (inline SVG, no
scripts), and their Markdown counterparts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape as e
from typing import TYPE_CHECKING, Literal

from flightcheck.lessons.evidence import Evidence
from flightcheck.results import LessonResult, Severity, StageName, Status

if TYPE_CHECKING:
    from flightcheck.report import Report

COMMAND = ["report"]
ItemStatus = Literal["pass", "warn", "fail", "not-run", "manual"]
CATEGORIES = ("code quality", "AI configuration", "container", "deployment configuration",
              "monitoring and alerting", "testing", "security")


@dataclass
class Item:
    id: str
    category: str
    title: str
    status: ItemStatus = "manual"
    evidence: list[dict[str, str]] | None = None
    note: str = ""  # why, or (manual) what to verify

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "category": self.category, "title": self.title,
                "status": self.status, "evidence": self.evidence or [], "note": self.note}


class _Look:
    """Evidence lookups that also produce the links."""

    def __init__(self, ev: Evidence, lessons: Sequence[LessonResult]) -> None:
        self.ev = ev
        self.lessons = list(lessons)

    def stage_ref(self, name: StageName, measurement: str | None = None) -> dict[str, str] | None:
        for i, s in enumerate(self.ev.stages):
            if s.name != name:
                continue
            if measurement is None:
                return {"text": f"{name}: {s.status.value} — {s.summary}"[:200],
                        "pointer": f"/stages/{i}", "anchor": f"stage-{name}"}
            for j, m in enumerate(s.measurements):
                if m.name == measurement:
                    unit = f" {m.unit}" if m.unit else ""
                    return {"text": f"{name} {m.name} = {m.value}{unit}",
                            "pointer": f"/stages/{i}/measurements/{j}", "anchor": f"stage-{name}"}
        return None

    def lesson(self, name: str) -> tuple[LessonResult | None, dict[str, str] | None]:
        for i, x in enumerate(self.lessons):
            if x.name == name:
                return x, {"text": f"lesson {name}: {x.status.value} — {x.summary}"[:200],
                           "pointer": f"/lessons/{i}", "anchor": f"lesson-{name}"}
        return None, None

    def config_ref(self, key: str, value: object) -> dict[str, str]:
        return {"text": f"config {key} = {value!r} ({self.ev.loaded.source_of(key)})",
                "pointer": f"config:{key}", "anchor": ""}


def _lint_category(look: _Look, item: Item, *categories: str) -> Item:
    lint = look.ev.stage("lint")
    if lint is None:
        item.status, item.note = "not-run", "lint did not run"
        return item
    refs = [r for c in categories if (r := look.stage_ref("lint", f"findings.{c}")) is not None]
    hits = [f for f in lint.findings if f.category in categories]
    errors = [f for f in hits if f.severity is Severity.ERROR]
    item.evidence = refs or [look.stage_ref("lint") or {}]
    item.status = "fail" if errors else "warn" if hits else "pass"
    if hits:
        item.note = f"{len(hits)} finding(s), e.g. {hits[0].code} {hits[0].file or ''}:{hits[0].line or ''}"
    return item


def _stage_item(look: _Look, item: Item, name: StageName, measurement: str | None = None) -> Item:
    stage = look.ev.stage(name)
    if stage is None:
        item.status, item.note = "not-run", f"{name} did not run in this run"
        return item
    item.evidence = [r for r in (look.stage_ref(name), look.stage_ref(name, measurement)
                                 if measurement else None) if r]
    item.status = _ITEM_STATUS.get(stage.status, "not-run")
    return item


def _lesson_item(look: _Look, item: Item, name: str, codes: Sequence[str] = ()) -> Item:
    lesson, ref = look.lesson(name)
    if lesson is None or ref is None or lesson.status is Status.SKIPPED:
        item.status = "not-run"
        item.note = lesson.summary if lesson is not None else f"the {name} lesson did not run"
        return item
    item.evidence = [ref]
    if codes:
        hits = [f for f in lesson.findings if f.code in codes]
        item.status = ("fail" if any(f.severity is Severity.ERROR for f in hits)
                       else "warn" if hits else "pass")
        if hits:
            item.note = hits[0].message[:200]
        return item
    item.status = _ITEM_STATUS.get(lesson.status, "not-run")
    return item


def _fact(look: _Look, item: Item, key: str, value: object, ok: bool, note: str,
          bad: ItemStatus = "warn") -> Item:
    item.evidence = [look.config_ref(key, value)]
    item.status = "pass" if ok else bad
    item.note = "" if ok else note
    return item


def _manual(category: str, id_: str, title: str, verify: str) -> Callable[[_Look], Item]:
    return lambda _: Item(id_, category, title, "manual", [], verify)


def _checklist() -> list[Callable[[_Look], Item]]:
    cq, ai, ct, dp, mon, t, sec = CATEGORIES
    return [
        lambda k: _lint_category(k, Item("code.syntax", cq, "Code compiles (no syntax or indentation errors)"), "syntax"),
        lambda k: _lint_category(k, Item("code.imports", cq, "Imports resolve against the declared dependencies"), "import"),
        lambda k: _stage_item(k, Item("code.image-imports", cq, "Critical modules import inside the built image"), "build"),
        lambda k: _lint_category(k, Item("code.ai-calls", cq, "LLM and HTTP calls have timeouts and error handling"), "ai-timeout", "ai-error-handling"),
        lambda k: _lint_category(k, Item("code.async", cq, "No blocking calls inside async code"), "async-blocking"),
        lambda k: _pinned(k, Item("ai.pinned", ai, "Model versions are pinned (no floating aliases)")),
        lambda k: _lesson_item(k, Item("ai.parity", ai, "AI parameters identical across environments and as running"), "parity"),
        lambda k: _stage_item(k, Item("ai.answers", ai, "The AI path answers correctly (smoke suite)"), "ai-smoke", "quality_score"),
        lambda k: _lesson_item(k, Item("ai.quality", ai, "No quality degradation against the baseline"), "quality"),
        lambda k: _lesson_item(k, Item("ai.cost", ai, "Cost per request and per hour within budget"), "cost"),
        lambda k: _fact(k, Item("ai.outage", ai, "An external AI outage warns instead of failing CI"),
                        "smoke.external_failure", k.ev.config.smoke.external_failure,
                        k.ev.config.smoke.external_failure == "warn",
                        "an unreachable provider fails CI: set [smoke].external_failure = \"warn\""),
        lambda k: _stage_item(k, Item("container.build", ct, "The image builds"), "build", "build_seconds"),
        lambda k: _lint_category(k, Item("container.dockerfile", ct, "Dockerfile: pinned base, non-root user, HEALTHCHECK"), "dockerfile"),
        lambda k: _stage_item(k, Item("container.memory", ct, "Runs under the memory limit with headroom"), "run-with-memory-limit", "peak_to_limit"),
        lambda k: _stage_item(k, Item("container.startup", ct, "Ready within the startup probe's window"), "health-poll", "time_to_ready_s"),
        lambda k: _lesson_item(k, Item("deploy.memory", dp, "Memory sized from the measured need"), "resources",
                               ("resources.memory-below-need", "resources.memory-far-above", "resources.little-headroom", "resources.too-big")),
        lambda k: _lesson_item(k, Item("deploy.probes", dp, "Startup probe covers the measured startup within Cloud Run's limits"), "resources",
                               ("resources.startup-window", "resources.startup-margin", "resources.startup-too-slow")),
        lambda k: _lesson_item(k, Item("deploy.cold-start", dp, "Min instances set for a slow cold start"), "resources", ("resources.cold-start",)),
        lambda k: _rollout(k, Item("deploy.rollout", dp, "Canary rollout with automatic rollback")),
        lambda k: _lesson_item(k, Item("monitoring.policies", mon, "Error-rate, p95-latency and cost alert policies defined as code"), "monitoring"),
        lambda k: _fact(k, Item("monitoring.channels", mon, "Alerts reach a person (notification channels)"),
                        "monitoring.notification_channels", k.ev.config.monitoring.notification_channels,
                        bool(k.ev.config.monitoring.notification_channels),
                        "no notification channel: alerts fire into the void; add [monitoring].notification_channels"),
        _manual(mon, "monitoring.applied", "Alert policies exist in the Cloud project",
                "run `flightcheck monitoring apply --project P` with credentials, then open Cloud Monitoring → Alerting"),
        _manual(mon, "monitoring.runbook", "An on-call runbook says what to do when an alert fires",
                "link the runbook from each alert policy's documentation"),
        lambda k: _stage_item(k, Item("testing.smoke", t, "An AI smoke suite runs and passes"), "ai-smoke", "cases_total"),
        _load_item,
        _manual(t, "testing.peak-traffic", "Load-tested at the expected peak traffic",
                "drive the expected peak request rate against a staging revision and watch p95 latency and errors"),
        lambda k: _lint_category(k, Item("security.secrets", sec, "No hard-coded secrets in code or config"), "secret"),
        lambda k: _fact(k, Item("security.auth", sec, "Not publicly invokable unless intended"),
                        "deploy.allow_unauthenticated", k.ev.config.deploy.allow_unauthenticated,
                        not k.ev.config.deploy.allow_unauthenticated,
                        "allUsers may invoke the service: confirm it is meant to be public"),
        _manual(sec, "security.secret-manager", "Provider keys come from Secret Manager, not plain env",
                "deploy keys as Secret Manager references (--set-secrets), never as literal env values"),
        _manual(sec, "security.service-account", "The service runs as a least-privilege service account",
                "give the Cloud Run service its own service account with only the roles it needs"),
    ]


def _has_load(look: _Look) -> bool:
    lesson, _ = look.lesson("resources")
    return lesson is not None and lesson.measurement("concurrency") is not None


def _load_item(look: _Look) -> Item:
    """Memory under load: a `flightcheck resources` result in the report dir (resources.json)
    or a resources lesson that drove load."""
    item = Item("testing.load", CATEGORIES[5], "Memory measured under concurrent requests")
    if _has_load(look):
        return _lesson_item(look, item, "resources")
    saved = look.ev.report_dir / "resources.json"
    if saved.is_file():
        try:
            measured = LessonResult.model_validate_json(saved.read_text(encoding="utf-8"))
        except ValueError:
            measured = None
        if measured is not None and measured.measurement("concurrency") is not None:
            item.status = _ITEM_STATUS.get(measured.status, "not-run")
            item.evidence = [{"text": f"resources.json: {measured.status.value} — {measured.summary}"[:200],
                              "pointer": "resources.json", "anchor": ""}]
            return item
    item.status, item.note = "not-run", "run `flightcheck resources --concurrency N` (same --report-dir)"
    return item


def _pinned(look: _Look, item: Item) -> Item:
    item = _lint_category(look, item, "ai-model-pin")
    lesson, ref = look.lesson("parity")
    if lesson is not None and ref is not None:
        floating = [f for f in lesson.findings if f.code == "parity.floating-model"]
        item.evidence = [*(item.evidence or []), ref]
        if floating:
            item.status = "fail" if item.status == "fail" else "warn"
            item.note = floating[0].message[:200]
        elif item.status == "not-run":
            item.status, item.note = "pass", ""
    return item


def _rollout(look: _Look, item: Item) -> Item:
    deploy = look.ev.stage("deploy")
    if deploy is not None:
        return _stage_item(look, item, "deploy")
    steps = look.ev.config.deploy.canary.steps
    return _fact(look, item, "deploy.canary.steps", steps, len(steps) > 1,
                 "a single step sends all traffic at once: add canary steps, e.g. [10, 50, 100]")


def evaluate(ev: Evidence, lessons: Sequence[LessonResult]) -> LessonResult:
    """The checklist over this run's stages and lessons (not a gate: it is their view)."""
    res = ev.result("readiness", COMMAND, "readiness")
    res.gate = False
    look = _Look(ev, lessons)
    items = [check(look) for check in _checklist()]
    res.details["items"] = [i.to_json() for i in items]
    counts = {s: sum(1 for i in items if i.status == s)
              for s in ("pass", "warn", "fail", "not-run", "manual")}
    for key, n in counts.items():
        res.measure(f"items_{key.replace('-', '_')}", n)
    automated = len(items) - counts["manual"]
    res.status = (Status.FAIL if counts["fail"] else
                  Status.WARN if counts["warn"] or counts["not-run"] else Status.PASS)
    res.summary = (f"{counts['pass']}/{automated} automated checks pass"
                   + "".join(f", {counts[k]} {k}" for k in ("fail", "warn", "not-run") if counts[k])
                   + f"; {counts['manual']} to verify by hand")
    return res


# --- rendering ---------------------------------------------------------------------------------

_ITEM_STATUS: dict[Status, ItemStatus] = {Status.PASS: "pass", Status.WARN: "warn",
                                          Status.FAIL: "fail"}
_BADGE = {"pass": "✅", "warn": "⚠️", "fail": "❌", "not-run": "⏭️", "manual": "📝"}


def _items(report: Report) -> list[dict[str, object]]:
    for x in report.lessons:
        if x.name == "readiness":
            raw = x.details.get("items")
            return [i for i in raw if isinstance(i, dict)] if isinstance(raw, list) else []
    return []


def _memory(report: Report) -> tuple[list[tuple[float, int]], int | None]:
    for s in report.stages:
        if s.name == "run-with-memory-limit":
            raw = s.details.get("memory_samples")
            limit = s.measurement("memory_limit_bytes")
            points = [(float(p[0]), int(p[1])) for p in raw
                      if isinstance(p, list) and len(p) == 2] if isinstance(raw, list) else []
            return points, int(limit) if isinstance(limit, int | float) else None
    return [], None


def _spans(report: Report) -> list[tuple[str, str, float, float]]:
    return [(s.name, s.status.value, s.started_at, s.duration_s) for s in report.stages
            if s.started_at is not None and s.status is not Status.SKIPPED]


def markdown_section(report: Report) -> list[str]:
    from flightcheck.report import _code, _md

    lines: list[str] = []
    spans = _spans(report)
    if spans:
        t0 = min(t for _, _, t, _ in spans)
        lines += ["", "## Timeline", "", "| stage | starts at | duration |", "|---|---:|---:|"]
        lines += [f"| {_md(n)} | +{t - t0:.2f}s | {d:.2f}s |" for n, _, t, d in spans]
    points, limit = _memory(report)
    if points:
        values = [v for _, v in points]
        bars = "▁▂▃▄▅▆▇█"
        top = max(values) or 1
        step = max(1, len(values) // 60)
        spark = "".join(bars[min(7, int(v / top * 7.999))] for v in values[::step])
        lines += ["", f"Memory over time ({len(points)} samples over {points[-1][0] - points[0][0]:.1f} s): "
                  f"{_code(spark)} peak {top / 2**20:.1f} MiB" + (f" of {limit / 2**20:.0f} MiB" if limit else "")]
    items = _items(report)
    if items:
        lines += ["", "## Production readiness", "",
                  "| | item | evidence / to verify |", "|---|---|---|"]
        for cat in CATEGORIES:
            for i in (i for i in items if i.get("category") == cat):
                evid = i.get("evidence")
                text = "; ".join(str(x.get("text", "")) for x in evid
                                 if isinstance(x, dict)) if isinstance(evid, list) else ""
                note = str(i.get("note") or "")
                shown = " — ".join(p for p in (text, note) if p)
                status = str(i.get("status"))
                lines.append(f"| {_BADGE.get(status, '')} {_md(status)} | "
                             f"**{_md(cat)}**: {_md(str(i.get('title')))} | {_md(shown)} |")
    return lines


_CHART_CSS = (
    ".chart{width:100%;max-width:70rem;height:auto;border:1px solid #ddd;background:#fff}"
    ".chart text{font:11px system-ui,sans-serif;fill:#333}"
    ".bar-pass{fill:#1a7f37}.bar-warn{fill:#9a6700}.bar-fail{fill:#cf222e}"
    ".mem{fill:none;stroke:#0969da;stroke-width:2}.limit{stroke:#cf222e;stroke-dasharray:6 4}"
    ".grid{stroke:#eee}.ev a{color:#0969da}"
    "td.manual{color:#6e7781}td.not-run{color:#6e7781}"
)
_W, _LEFT, _RIGHT = 900, 150, 60


def timeline_svg(report: Report) -> str:
    spans = _spans(report)
    if not spans:
        return ""
    t0 = min(t for _, _, t, _ in spans)
    t1 = max(t + d for _, _, t, d in spans)
    points, _ = _memory(report)
    if points:
        t1 = max(t1, points[-1][0])
    scale = (_W - _LEFT - _RIGHT) / max(t1 - t0, 0.001)
    row = 24
    height = row * len(spans) + 30
    parts = [f'<svg id="timeline" class="chart" viewBox="0 0 {_W} {height}" role="img" '
             f'aria-label="per-stage timeline" xmlns="http://www.w3.org/2000/svg">'
             "<title>per-stage timeline</title>"]
    for k, (name, status, start, dur) in enumerate(spans):
        y = 10 + k * row
        x = _LEFT + (start - t0) * scale
        w = max(2.0, dur * scale)
        parts.append(f'<text x="{_LEFT - 8}" y="{y + 14}" text-anchor="end">{e(name)}</text>'
                     f'<rect class="bar-{e(status)}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="18">'
                     f"<title>{e(name)}: {e(status)}, +{start - t0:.2f}s for {dur:.2f}s</title></rect>"
                     f'<text x="{x + w + 4:.1f}" y="{y + 14}">{dur:.2f}s</text>')
    parts.append(f'<text x="{_LEFT}" y="{height - 4}">0 s</text>'
                 f'<text x="{_W - _RIGHT}" y="{height - 4}" text-anchor="end">{t1 - t0:.1f} s</text></svg>')
    return "".join(parts)


def memory_svg(report: Report) -> str:
    points, limit = _memory(report)
    if len(points) < 2:
        return ""
    spans = _spans(report)
    t0 = min([points[0][0], *(t for _, _, t, _ in spans)])
    t1 = max([points[-1][0], *(t + d for _, _, t, d in spans)])
    top = max([*(v for _, v in points), limit or 0]) * 1.05 or 1
    height, bottom, topm = 260, 30, 10
    sx = (_W - _LEFT - _RIGHT) / max(t1 - t0, 0.001)
    sy = (height - bottom - topm) / top

    def xy(t: float, v: float) -> str:
        return f"{_LEFT + (t - t0) * sx:.1f},{height - bottom - v * sy:.1f}"

    poly = " ".join(xy(t, v) for t, v in points)
    peak_t, peak_v = max(points, key=lambda p: p[1])
    parts = [f'<svg id="memory-chart" class="chart" viewBox="0 0 {_W} {height}" role="img" '
             f'aria-label="memory over time" xmlns="http://www.w3.org/2000/svg">'
             "<title>memory over time during run, health-poll and ai-smoke</title>"]
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        v = top * frac
        y = height - bottom - v * sy
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{v / 2**20:.0f} MiB</text>')
    for name, _, start, _ in spans:
        x = _LEFT + (start - t0) * sx
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{topm}" y2="{height - bottom}"/>'
                     f'<text x="{x + 2:.1f}" y="{height - 14}">{e(name)}</text>')
    if limit:
        y = height - bottom - limit * sy
        parts.append(f'<line class="limit" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}">'
                     f"<title>limit {limit / 2**20:.0f} MiB</title></line>")
    parts.append(f'<polyline class="mem" points="{poly}"><title>memory in use</title></polyline>'
                 f'<circle cx="{xy(peak_t, peak_v).split(",")[0]}" cy="{xy(peak_t, peak_v).split(",")[1]}" r="4" fill="#0969da">'
                 f"<title>peak {peak_v / 2**20:.1f} MiB</title></circle>"
                 f'<text x="{_LEFT}" y="{height - 2}">{len(points)} samples, peak {peak_v / 2**20:.1f} MiB'
                 + (f", limit {limit / 2**20:.0f} MiB" if limit else "") + "</text></svg>")
    return "".join(parts)


def html_sections(report: Report) -> str:
    out = [f"<style>{_CHART_CSS}</style>"]
    timeline = timeline_svg(report)
    if timeline:
        out.append(f"<h2>Timeline</h2>{timeline}")
    chart = memory_svg(report)
    if chart:
        out.append(f"<h2>Memory over time</h2>{chart}")
    items = _items(report)
    if items:
        rows = []
        for cat in CATEGORIES:
            for i in (i for i in items if i.get("category") == cat):
                status = str(i.get("status"))
                links = []
                evid = i.get("evidence")
                for x in evid if isinstance(evid, list) else []:
                    if not isinstance(x, dict):
                        continue
                    label = e(str(x.get("text", "")))
                    anchor = str(x.get("anchor") or "")
                    pointer = e(str(x.get("pointer", "")))
                    links.append(f'<a href="#{e(anchor)}" title="{pointer}">{label}</a>' if anchor
                                 else f'<span title="{pointer}">{label}</span>')
                note = e(str(i.get("note") or ""))
                rows.append(
                    f'<tr id="item-{e(str(i.get("id")))}"><td class="{e(status)}">'
                    f"{e(status)}</td><td>{e(cat)}</td>"
                    f"<td>{e(str(i.get('title')))}</td><td class=\"ev\">{'<br>'.join(links)}"
                    + (f"<br><i>{note}</i>" if note and links else f"<i>{note}</i>" if note else "")
                    + "</td></tr>")
        out.append('<h2 id="readiness">Production readiness</h2><table id="readiness-checklist">'
                   "<tr><th>status</th><th>area</th><th>item</th><th>evidence / to verify</th></tr>"
                   f"{''.join(rows)}</table>")
    return "".join(out) if len(out) > 1 else ""
