"""The smoke suite: a YAML file of cases (request + expectations + optional model script).

The format is documented field by field in docs/smoke.md. Loading validates everything up
front — paths, regexes, JSON schemas, model scripts — so a typo is a clear config error
before any request is sent, not a confusing failure halfway through the run.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import jsonschema
import jsonschema.validators
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from flightcheck.errors import ConfigError
from flightcheck.fakemodel.server import ScriptError, parse_script
from flightcheck.smoke.jsonpath import parse_path

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
ProviderName = Literal["fake", "openai", "gemini"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Request(_Strict):
    """What to send to the service."""

    method: HttpMethod = "GET"
    path: str
    body: Any = Field(default=None, alias="json", description="JSON body")
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"request path {v!r} must start with '/', e.g. /v1/evaluate")
        return v


_CHECK_KINDS = ("equals", "contains", "regex", "approx", "exists", "one_of")


class JsonCheck(_Strict):
    """One assertion on a value inside the JSON response, addressed by ``path``."""

    path: str
    equals: Any = None
    contains: Any = None
    regex: str | None = None
    approx: float | None = None
    tolerance: float | None = Field(default=None, ge=0, description="absolute, for approx")
    rel_tolerance: float | None = Field(default=None, ge=0, description="relative, for approx")
    exists: bool | None = None
    one_of: list[Any] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        parse_path(v)
        return v

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"regex {v!r} does not compile: {exc}") from None
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> JsonCheck:
        kinds = [k for k in _CHECK_KINDS if k in self.model_fields_set]
        if len(kinds) != 1:
            raise ValueError(
                f"check on {self.path!r} needs exactly one of {', '.join(_CHECK_KINDS)}; "
                f"got {', '.join(kinds) or 'none'}"
            )
        tolerances = {"tolerance", "rel_tolerance"} & self.model_fields_set
        if tolerances and kinds[0] != "approx":
            raise ValueError(f"{', '.join(sorted(tolerances))} only goes with approx")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _CHECK_KINDS if k in self.model_fields_set)

    @property
    def expected(self) -> Any:
        return getattr(self, self.kind)


class TokenBudget(_Strict):
    """Upper bounds on the provider tokens one case may use."""

    max_total: int | None = Field(default=None, ge=0)
    max_prompt: int | None = Field(default=None, ge=0)
    max_completion: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _something(self) -> TokenBudget:
        if self.max_total is None and self.max_prompt is None and self.max_completion is None:
            raise ValueError("tokens needs at least one of max_total, max_prompt, max_completion")
        return self


class Expect(_Strict):
    """What the response must look like."""

    status: int | list[int] = 200
    schema_: dict[str, Any] | str | None = Field(
        default=None, alias="schema", description="JSON schema (inline) or a file relative to the suite"
    )
    checks: list[JsonCheck] = Field(default_factory=list, alias="json")
    latency_ms: float | None = Field(default=None, gt=0)
    tokens: TokenBudget | None = None
    cost_usd: float | None = Field(default=None, ge=0)

    @property
    def statuses(self) -> list[int]:
        return self.status if isinstance(self.status, list) else [self.status]


class ModelScript(_Strict):
    """Replies the fake model server gives for this case's provider calls (fake mode only)."""

    replies: list[dict[str, Any]]
    after: Literal["default", "last"] = "default"

    @model_validator(mode="after")
    def _valid(self) -> ModelScript:
        try:
            parse_script({"replies": self.replies, "after": self.after})
        except ScriptError as exc:
            raise ValueError(str(exc)) from None
        return self


class Case(_Strict):
    """One smoke case."""

    name: str = Field(min_length=1)
    request: Request
    expect: Expect = Field(default_factory=Expect)
    model: ModelScript | None = None
    external: bool = Field(
        False, description="an unreachable external provider makes this a warning"
    )
    timeout_s: float | None = Field(default=None, gt=0)
    usage_path: str | None = Field(
        default=None, description="where the response reports token usage"
    )
    _line: int | None = PrivateAttr(None)  # where the case starts in the suite file

    @property
    def line(self) -> int | None:
        return self._line

    @field_validator("usage_path")
    @classmethod
    def _usage_path(cls, v: str | None) -> str | None:
        if v is not None:
            parse_path(v)
        return v


class Defaults(_Strict):
    """Applied to every case that does not say otherwise."""

    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)
    usage_path: str = "usage"
    model_path: str = Field(
        default="model", description="where the response names the model used"
    )

    @field_validator("usage_path", "model_path")
    @classmethod
    def _path(cls, v: str) -> str:
        parse_path(v)
        return v


class Price(_Strict):
    """USD per 1M tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, v: object) -> object:
        if isinstance(v, list | tuple) and len(v) == 2:
            return {"input": v[0], "output": v[1]}
        return v

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class Suite(_Strict):
    """A whole smoke.yaml."""

    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    prices: dict[str, Price] = Field(default_factory=dict)
    env: dict[ProviderName, dict[str, str]] = Field(
        default_factory=dict, description="service env per provider mode (fake/openai/gemini)"
    )
    cases: list[Case] = Field(min_length=1)
    _path: Path | None = PrivateAttr(None)

    @property
    def path(self) -> Path | None:
        """The file the suite came from (None when built in memory)."""
        return self._path

    def env_for(self, provider: str) -> dict[str, str]:
        """The service env the suite declares for a provider mode (fake/openai/gemini)."""
        return dict(self.env.get(provider, {}))  # type: ignore[call-overload]

    @model_validator(mode="after")
    def _unique(self) -> Suite:
        seen: set[str] = set()
        for case in self.cases:
            if case.name in seen:
                raise ValueError(f"case name {case.name!r} is used twice; names must be unique")
            seen.add(case.name)
        return self


def _case_lines(text: str) -> list[int]:
    """Line numbers (1-based) of each item under ``cases:``, for findings that point there."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "cases" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


MAX_SUITE_BYTES = 1024**2
MAX_NODES = 100_000  # YAML nodes after aliases are expanded: a real suite has a few thousand


class SuiteTooLarge(ValueError):
    """The YAML would expand beyond :data:`MAX_NODES` (an alias bomb) or refers to itself."""


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes the document has once every alias is expanded, stopping at ``limit``.
    Shared nodes are counted once per use, which is what loading them costs downstream."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise SuiteTooLarge("an alias refers to the node that contains it (recursive YAML)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        active.discard(key)
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(root)


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses documents whose aliases expand past :data:`MAX_NODES`
    (a "billion laughs" suite would otherwise be expanded by validation) or that are too big.
    Raises SuiteTooLarge or yaml.YAMLError."""
    if len(text) > MAX_SUITE_BYTES:
        raise SuiteTooLarge(f"the file is larger than {MAX_SUITE_BYTES // 1024} KiB")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_NODES) > MAX_NODES:
            raise SuiteTooLarge(
                f"its aliases (*name) expand to more than {MAX_NODES} values (an alias bomb?)"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _resolve_schema(
    schema: dict[str, Any] | str, base: Path, where: str, root: Path | None = None
) -> dict[str, Any]:
    if isinstance(schema, str):
        file = (base / schema).resolve()
        inside = (root or base).resolve()
        if not file.is_relative_to(inside):
            raise ValueError(f"{where}: schema file {schema!r} resolves to {file}, outside "
                             f"{inside}; keep schema files inside the project")
        try:
            text = file.read_text(encoding="utf-8")
            loaded = json.loads(text) if file.suffix == ".json" else safe_yaml(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            # The reason only: a parser's message may quote the file's content.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
                str(exc) if isinstance(exc, SuiteTooLarge) else "not valid JSON/YAML")
            raise ValueError(f"{where}: cannot load schema file {file}: {reason}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{where}: schema file {file} does not hold a JSON object")
        schema = loaded
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"{where}: invalid JSON schema: {exc.message}") from None
    return schema


def parse_suite(
    data: object, *, path: Path | None = None, text: str = "", root: Path | None = None
) -> Suite:
    """Validate already-parsed YAML/JSON data as a suite. Raises ConfigError."""
    label = str(path) if path else "<suite>"
    repro = f"flightcheck ci --only ai-smoke  # suite {label}"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{label}: a smoke suite is a mapping with a 'cases' list",
            fix="see docs/smoke.md for the format and an example",
            repro=repro,
        )
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise _suite_error(exc, data, label, repro) from None
    suite._path = path
    lines = _case_lines(text)
    base = path.parent if path else Path.cwd()
    try:
        for i, case in enumerate(suite.cases):
            case._line = lines[i] if i < len(lines) else None
            if case.expect.schema_ is not None:
                case.expect.schema_ = _resolve_schema(
                    case.expect.schema_, base, f"case {case.name!r}", root
                )
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}", fix="fix the schema", repro=repro) from None
    return suite


def load_suite(path: Path, *, root: Path | None = None) -> Suite:
    """Read and validate a suite file. Raises ConfigError with the failing key and a fix.
    Schema files it names must stay inside ``root`` (default: the suite's directory)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"smoke suite {path} not found",
            why="[smoke].suite names a file that does not exist",
            fix="write one (docs/smoke.md has the format and an example) or set [smoke].suite",
            repro="flightcheck ci --only ai-smoke",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read smoke suite {path}: {exc}") from None
    try:
        data = safe_yaml(text)
    except SuiteTooLarge as exc:
        raise ConfigError(
            f"{path}: refused: {exc}",
            why="flightcheck bounds what it reads, so a suite cannot exhaust memory or time",
            fix="write the cases out (anchors for a shared schema are fine), or split the suite",
            repro="flightcheck ci --only ai-smoke",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{path}{where}: not valid YAML: {problem}",
            fix="fix the YAML at the position given",
            repro=f"python -c \"import yaml; yaml.safe_load(open('{path}'))\"",
        ) from None
    return parse_suite(data, path=path, text=text, root=root)


def _suite_error(exc: ValidationError, data: dict[str, Any], label: str, repro: str) -> ConfigError:
    problems: list[str] = []
    cases = data.get("cases")
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int) and isinstance(cases, list):
            item = cases[loc[1]] if loc[1] < len(cases) else None
            if isinstance(item, dict) and "name" in item:
                where += f" (case {item['name']!r})"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(f"{where}: {msg}")
    return ConfigError(
        f"{label}: {len(problems)} problem(s) in the smoke suite\n    " + "\n    ".join(problems),
        fix="correct the keys listed (docs/smoke.md lists every field)",
        repro=repro,
    )


def is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
