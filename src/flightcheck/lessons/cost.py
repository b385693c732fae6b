"""Cost: the tokens each request really used × a versioned price table, against budgets.

Evidence: ai-smoke's per-case token usage (the provider's count from the fake model server's
log and the count the service reports in its answer). When both exist and disagree, the higher
one is priced and the disagreement is reported: a service that under-reports its usage hides
cost, and one that over-reports (FAULT_TOKEN_MULTIPLIER) bills more than it says. Prices come
from, later wins: the table shipped in the package (``data/prices.json``, versioned by date),
``[smoke].prices``, the suite's ``prices``, ``[cost].prices``. Nothing is fetched.

Gates (named defaults in ``lessons/defaults.py``, all configurable in ``[cost]``): the most
expensive request against ``max_per_request_usd`` (0.05), and the mean cost per request
projected at ``requests_per_hour`` against ``max_per_hour_usd`` (10) and ``max_per_day_usd``
(100). A model with no price fails: an unknown cost is not within budget.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from flightcheck.errors import ConfigError
from flightcheck.lessons import defaults
from flightcheck.lessons.evidence import Evidence, fmt_usd
from flightcheck.results import Finding, LessonResult, Severity, Status

COMMAND = ["cost"]


@dataclass(frozen=True)
class Price:
    """USD per 1M input / output tokens, and where the number came from."""

    input: float
    output: float
    source: str

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


@dataclass(frozen=True)
class PriceTable:
    version: str
    models: Mapping[str, Price]


@cache
def price_table() -> PriceTable:
    """The price table shipped in the package."""
    data = json.loads(resources.files("flightcheck").joinpath("data/prices.json").read_text())
    version = str(data["version"])
    return PriceTable(
        version=version,
        models={
            name: Price(float(p["input"]), float(p["output"]), f"price table {version}")
            for name, p in data["models"].items()
        },
    )


def resolve_prices(ev: Evidence) -> dict[str, Price]:
    """Every known price by model name ('*' = any other model), later sources winning."""
    cfg = ev.config
    prices: dict[str, Price] = dict(price_table().models)
    prices.update({m: Price(i, o, "[smoke].prices") for m, (i, o) in cfg.smoke.prices.items()})
    suite_path = cfg.resolve(cfg.smoke.suite)
    if suite_path.is_file():
        from flightcheck.smoke.suite import load_suite

        try:
            suite = load_suite(suite_path)
        except ConfigError:
            suite = None  # ai-smoke reports a broken suite; its prices are simply not known
        if suite is not None:
            prices.update({m: Price(p.input, p.output, f"{suite_path.name} prices")
                           for m, p in suite.prices.items()})
    prices.update({m: Price(i, o, "[cost].prices") for m, (i, o) in cfg.cost.prices.items()})
    return prices


def price_of(prices: Mapping[str, Price], model: str | None) -> Price | None:
    if model and model in prices:
        return prices[model]
    return prices.get("*")


@dataclass(frozen=True)
class RequestCost:
    """One smoke request that used tokens."""

    case: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    counted_by: str  # provider | service
    cost_usd: float | None
    disagreement: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "case": self.case, "model": self.model, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "total_tokens": self.total_tokens,
            "counted_by": self.counted_by,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 10),
            **({"disagreement": self.disagreement} if self.disagreement else {}),
        }


def _usage(raw: object) -> tuple[int, int, int] | None:
    if not isinstance(raw, Mapping):
        return None
    p, c, t = (int(raw.get(k, 0) or 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    t = t or p + c
    return (p, c, t) if t > 0 else None


def request_costs(cases: Sequence[Mapping[str, Any]], prices: Mapping[str, Price]) -> list[RequestCost]:
    """The requests that used tokens, each priced at the higher of its two counts."""
    out: list[RequestCost] = []
    for case in cases:
        usage = case.get("usage")
        if not isinstance(usage, Mapping):
            continue
        counts = {src: u for src, raw in usage.items() if (u := _usage(raw)) is not None}
        if not counts:
            continue
        source, (p, c, t) = max(counts.items(), key=lambda kv: kv[1][2])
        note = ""
        if len(counts) == 2:
            low = min(u[2] for u in counts.values())
            if t > low * (1 + defaults.COST_TOKEN_DISAGREEMENT):
                other = next(s for s in counts if s != source)
                note = (f"the {source} counted {t} tokens, the {other} {low} "
                        f"({t / max(low, 1):.1f}×)")
        model = case.get("model") if isinstance(case.get("model"), str) else None
        price = price_of(prices, model)
        out.append(RequestCost(
            case=str(case.get("name", "?")), model=model, prompt_tokens=p, completion_tokens=c,
            total_tokens=t, counted_by=source,
            cost_usd=None if price is None else price.cost(p, c), disagreement=note,
        ))
    return out


def evaluate(ev: Evidence, *, requests_per_hour: float | None = None) -> LessonResult:
    """The cost lesson over one run's evidence."""
    cfg = ev.config.cost
    rate = requests_per_hour or cfg.requests_per_hour
    asked = [f"{requests_per_hour:g}"] if requests_per_hour else []
    res = ev.result("cost", [*COMMAND, *(["--requests-per-hour", *asked] if asked else [])], "cost",
                    dagger_args=[f"--requests-per-hour={r}" for r in asked])
    smoke = ev.stage("ai-smoke")
    cases = smoke.details.get("cases") if smoke is not None else None
    if smoke is None or not isinstance(cases, list):
        res.status = Status.SKIPPED
        res.summary = "skipped: ai-smoke did not run, so no request's token usage was measured"
        return res
    prices = resolve_prices(ev)
    requests = request_costs([c for c in cases if isinstance(c, Mapping)], prices)
    res.details["price_table_version"] = price_table().version
    res.details["requests"] = [r.to_json() for r in requests]
    res.details["budgets"] = {
        "max_per_request_usd": cfg.max_per_request_usd, "max_per_hour_usd": cfg.max_per_hour_usd,
        "max_per_day_usd": cfg.max_per_day_usd, "requests_per_hour": rate,
    }
    used = {r.model for r in requests}
    res.details["prices"] = {
        str(m): ({"input": p.input, "output": p.output, "source": p.source} if p else None)
        for m in sorted(used, key=str) for p in [price_of(prices, m)]
    }
    res.measure("requests_per_hour", rate, "requests/h")
    res.measure("requests_measured", len(requests))
    if not requests:
        res.status = Status.WARN
        res.summary = "no smoke request reported token usage: cost could not be measured"
        res.findings.append(Finding(
            code="cost.no-usage", category="cost", severity=Severity.WARNING,
            message=res.summary,
            fix="let the service report usage in its answers ([smoke] usage_path) or run the "
            "suite against the fake model server, which counts every token",
        ))
        return res

    for r in requests:
        if r.disagreement:
            res.findings.append(Finding(
                code="cost.token-disagreement", category="cost", severity=Severity.WARNING,
                message=f"case {r.case!r}: {r.disagreement}; cost uses the higher count",
                fix="find out which count is right: a service that reports more tokens than "
                "it sent inflates its bills or its prompt; one that reports fewer hides cost",
            ))
    unpriced = sorted({str(r.model) for r in requests if r.cost_usd is None})
    if unpriced:
        # Against a real provider an unknown cost is a risk: fail. A fake model's stand-in name
        # (what `flightcheck init` writes) has no price to know: the gate says it checked nothing.
        real = str(smoke.details.get("mode", "")).startswith("real provider")
        res.status = Status.FAIL if real else Status.WARN
        res.summary = (f"no price for {', '.join(unpriced)}: the cost is unknown, not within budget"
                       + ("" if real else " (fake model: cost not checked)"))
        res.findings.append(Finding(
            code="cost.no-price", category="cost", message=res.summary,
            severity=Severity.ERROR if real else Severity.WARNING,
            fix=f"add the model to [cost].prices as [input, output] USD per 1M tokens (the "
            f"shipped table, version {price_table().version}, does not list it)",
        ))
        return res

    costs = [r.cost_usd for r in requests if r.cost_usd is not None]
    tokens = [r.total_tokens for r in requests]
    mean = sum(costs) / len(costs)
    worst = max(requests, key=lambda r: r.cost_usd or 0.0)
    canary = canary_cost(ev)
    if canary is not None:
        # What the candidate revision's real traffic cost: it projects, if it is dearer.
        res.details["canary"] = canary
        res.measure("canary_requests", canary["ai_requests"])
        res.measure("canary_cost_per_request_usd", canary["cost_per_request_usd"], "USD")
        mean = max(mean, float(canary["cost_per_request_usd"]))
    per_hour = mean * rate
    per_day = per_hour * 24
    res.measure("tokens_per_request", round(sum(tokens) / len(tokens), 1), "tokens")
    res.measure("max_tokens_per_request", max(tokens), "tokens")
    res.measure("cost_per_request_usd", round(mean, 8), "USD")
    res.measure("max_cost_per_request_usd", round(worst.cost_usd or 0.0, 8), "USD")
    res.measure("cost_per_hour_usd", round(per_hour, 6), "USD")
    res.measure("cost_per_day_usd", round(per_day, 6), "USD")

    over: list[str] = []
    if (worst.cost_usd or 0.0) > cfg.max_per_request_usd:
        over.append(f"request {worst.case!r} costs {fmt_usd(worst.cost_usd)} > "
                    f"{fmt_usd(cfg.max_per_request_usd)} per request "
                    f"({worst.total_tokens} tokens of {worst.model})")
    if per_hour > cfg.max_per_hour_usd:
        over.append(f"{fmt_usd(per_hour)}/h at {rate:g} requests/h > {fmt_usd(cfg.max_per_hour_usd)}/h")
    if per_day > cfg.max_per_day_usd:
        over.append(f"{fmt_usd(per_day)}/day at {rate:g} requests/h > "
                    f"{fmt_usd(cfg.max_per_day_usd)}/day")
    for why in over:
        res.findings.append(Finding(
            code="cost.budget", category="cost", message=f"over budget: {why}",
            fix="cut prompt and output tokens (MAX_OUTPUT_TOKENS), pick a cheaper model, or "
            "raise the budget in [cost] if this spend is intended",
        ))
    res.status = Status.FAIL if over else (Status.WARN if res.findings else Status.PASS)
    res.summary = (
        f"{fmt_usd(mean)}/request (max {fmt_usd(worst.cost_usd)}), {sum(tokens) / len(tokens):.0f} "
        f"tokens/request; {fmt_usd(per_hour)}/h, {fmt_usd(per_day)}/day at {rate:g} requests/h"
    )
    if over:
        res.summary = "over budget: " + "; ".join(over)
    return res


def canary_cost(ev: Evidence) -> dict[str, float] | None:
    """Token usage and cost of the traffic the deploy stage drove to the candidate revision
    (its canary steps' per-revision metrics), when a deploy ran and measured any."""
    deploy = ev.stage("deploy")
    if deploy is None:
        return None
    candidate, steps = deploy.details.get("revision"), deploy.details.get("steps")
    if not isinstance(candidate, str) or not isinstance(steps, list):
        return None
    requests = tokens = 0
    cost = 0.0
    for step in steps:
        metrics = step.get("metrics") if isinstance(step, Mapping) else None
        mine = metrics.get(candidate) if isinstance(metrics, Mapping) else None
        if not isinstance(mine, Mapping) or mine.get("cost_per_request_usd") is None:
            continue
        n = int(mine.get("ai_requests") or 0)
        requests += n
        tokens += int(mine.get("tokens") or 0)
        cost += float(mine.get("cost_usd") or 0.0)
    if requests == 0:
        return None
    return {"ai_requests": requests, "tokens": tokens, "cost_usd": round(cost, 8),
            "cost_per_request_usd": round(cost / requests, 10)}


def text(res: LessonResult) -> list[str]:
    """The per-request table for the terminal."""
    rows = res.details.get("requests")
    if not isinstance(rows, list) or not rows:
        return []
    lines = [f"{'request':<44} {'model':<24} {'tokens':>8} {'by':<8} {'USD':>12}"]
    for r in rows:
        if isinstance(r, Mapping):
            cost = r.get("cost_usd")
            lines.append(f"{str(r.get('case'))[:44]:<44} {str(r.get('model'))[:24]:<24} "
                         f"{r.get('total_tokens'):>8} {str(r.get('counted_by')):<8} "
                         f"{fmt_usd(cost if isinstance(cost, float | int) else None):>12}")
    prices = res.details.get("prices")
    shown = []
    for model, p in (prices.items() if isinstance(prices, Mapping) else []):
        shown.append(f"{model}: {p.get('input')}/{p.get('output')} per 1M ({p.get('source')})"
                     if isinstance(p, Mapping) else f"{model}: no price")
    lines.append(f"prices: table {res.details.get('price_table_version')}; " + ", ".join(shown))
    return lines
