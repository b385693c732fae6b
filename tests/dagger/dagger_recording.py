"""A recording stand-in for the Dagger engine at the GraphQL boundary (test support).

The Python SDK builds queries lazily: a chain of fields in a ``dagger.client._core.Context``,
sent to the engine when something is awaited (``Context.execute``). ``Recorder.install`` replaces
that one method. Everything above it is the real SDK: nested objects passed as arguments are
turned into IDs by the SDK's own ``resolve_ids`` (each one a query of its own, recorded too),
results are decoded by the SDK's own ``get_value``. Each query is recorded as its chain of
(type, field, args); with the engine's schema at hand it is also rendered by the SDK's DSL
builder (``Field.to_dsl``, as ``Context.build`` does) and validated with graphql-core. The
answers (plan JSON, exit codes, image config) come from a table the test provides.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql
import pytest
from dagger.client._core import Context
from gql.dsl import DSLQuery, DSLSchema, dsl_gql

# The engine's schema, published by dagger/dagger: reference data beside the repository (a CI
# checkout puts ../shared next to it), never an absolute path of one machine.
REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO.parent / "shared" / "dagger" / "schema-0.21.graphqls"


@functools.cache
def load_schema() -> graphql.GraphQLSchema | None:
    """The engine's schema (v0.21), or None when the reference file is not on this machine."""
    if not SCHEMA_FILE.is_file():
        return None
    return graphql.build_schema(SCHEMA_FILE.read_text(encoding="utf-8"))


def require_schema(what: str) -> graphql.GraphQLSchema:
    """The engine's schema for a test that needs it. Without the file: a skip on a developer's
    machine, a failure in CI (``CI`` set), where a silent skip would hide that nothing was
    validated."""
    schema = load_schema()
    if schema is not None:
        return schema
    message = (f"the engine schema {SCHEMA_FILE} (../shared/dagger beside the repository) is "
               f"missing: {what}")
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must provide it", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class Step:
    """One field of a query chain."""

    type: str
    field: str
    args: dict[str, Any]

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.type}.{self.field}({shown})"


@dataclass
class Query:
    chain: list[Step]
    text: str | None = None  # rendered GraphQL (None without the schema)
    errors: list[str] = field(default_factory=list)  # schema validation errors

    @property
    def leaf(self) -> Step:
        return self.chain[-1]


Answer = Callable[["Recorder", list[Step]], Any]


class Recorder:
    """Records every query the SDK sends; answers leaves from ``answers`` (value or callable,
    keyed by the leaf field's GraphQL name). IDs are minted here (``Type#n``), one per recipe."""

    def __init__(self, answers: Mapping[str, Any] | None = None, *, validate: bool = True) -> None:
        self.answers: dict[str, Any] = dict(answers or {})
        self.schema = load_schema() if validate else None
        self._dsl = DSLSchema(self.schema) if self.schema is not None else None
        self.queries: list[Query] = []
        self.objects: dict[str, list[Step]] = {}  # ID → the chain that made the object
        self._ids: dict[str, str] = {}  # recipe → ID

    # --- the boundary ---------------------------------------------------------------------

    def install(self, monkeypatch: Any) -> Recorder:
        recorder = self

        async def execute(ctx: Context, return_type: Any = None) -> Any:
            return await recorder._execute(ctx, return_type)

        monkeypatch.setattr(Context, "execute", execute)
        return self

    def input_id(self, label: str) -> str:
        """An ID the engine would hand in as a function argument (a directory, a secret)."""
        id_ = f"input:{label}"
        self.objects[id_] = [Step("Input", label, {})]
        return id_

    async def _execute(self, ctx: Context, return_type: Any) -> Any:
        await ctx.resolve_ids()  # the SDK's own: object arguments become ID queries (via us)
        chain = [Step(f.type_name, f.name, dict(f.args)) for f in ctx.selections]
        query = Query(chain)
        if self._dsl is not None and self.schema is not None:
            root = functools.reduce(lambda child, parent: parent.add_child(child),
                                    reversed(ctx.selections))
            request = dsl_gql(DSLQuery(root.to_dsl(self._dsl)))
            query.text = graphql.print_ast(request.document)
            query.errors = [e.message for e in graphql.validate(self.schema, request.document)]
        self.queries.append(query)
        leaf = chain[-1]
        if leaf.field in self.answers:  # may raise, as the engine does (e.g. a failed build)
            answer = self.answers[leaf.field]
            value: Any = answer(self, chain) if callable(answer) else answer
        elif leaf.field in ("id", "sync"):  # like the engine's: one recipe, one ID
            recipe = repr(chain[:-1])
            value = self._ids.get(recipe) or f"{leaf.type}#{len(self.objects)}"
            self._ids[recipe] = value
            self.objects[value] = chain[:-1]
        else:
            raise AssertionError(f"no answer for {leaf!r} in {self.lineage(chain)}")
        if return_type is None:
            return None
        for f in reversed(ctx.selections):
            value = {f.name: value}
        return ctx.get_value(value, return_type)

    # --- reading what was recorded ----------------------------------------------------------

    def lineage(self, chain: list[Step]) -> list[Step]:
        """``chain`` from its root: a chain that starts at ``node(id)`` continues the chain of
        the object with that ID."""
        if chain and chain[0].field == "node" and chain[0].args.get("id") in self.objects:
            return self.lineage(self.objects[chain[0].args["id"]]) + chain[1:]
        return list(chain)

    def object_chain(self, id_: str) -> list[Step]:
        return self.lineage(self.objects[id_])

    def with_leaf(self, name: str) -> Iterator[Query]:
        return (q for q in self.queries if q.leaf.field == name)

    def last(self, name: str) -> list[Step]:
        """The full lineage of the last query whose leaf is ``name``."""
        found = [q for q in self.queries if q.leaf.field == name]
        assert found, f"no {name} query was sent; sent: {[q.leaf for q in self.queries]}"
        return self.lineage(found[-1].chain)

    def invalid(self) -> list[tuple[str | None, list[str]]]:
        return [(q.text, q.errors) for q in self.queries if q.errors]


def steps(chain: list[Step], name: str) -> list[Step]:
    return [s for s in chain if s.field == name]


def one(chain: list[Step], name: str) -> Step:
    found = steps(chain, name)
    assert len(found) == 1, f"{name}: {found} in {chain}"
    return found[0]


def index(chain: list[Step], name: str, **args: Any) -> int:
    """Position of the first ``name`` step whose args include ``args``."""
    for i, s in enumerate(chain):
        if s.field == name and all(s.args.get(k) == v for k, v in args.items()):
            return i
    raise AssertionError(f"no {name}({args}) in {chain}")
