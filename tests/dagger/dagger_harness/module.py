"""The engine's side of a module: register it, then call its functions the way the engine does.

Registration: the module's runtime (the Python SDK's own entry point, ``dagger.mod.cli``) runs
with ``currentFunctionCall.parentName`` empty and sends its type definitions (``Module``,
``TypeDef``, ``Function`` ... chains) back as ``returnValue``. From them the harness adds the
module's object to the schema — ``Query.flightcheck`` and ``Flightcheck.ci(...)`` etc., with
camelCase names — exactly what ``dagger call`` queries. A call of such a field runs the runtime
again, in a fresh session whose ``currentFunctionCall`` carries the parent's state and the
inputs (object arguments as IDs, a ``DefaultPath`` argument loaded from the module's context
directory with its ``Ignore`` patterns), and answers with what it ``returnValue``'d — or with
the error it ``returnError``'d.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql
import httpx

from . import api
from .api import Ctx, ModuleObject, Session
from .engine import Engine, EngineError, FunctionCall, Recipe
from .server import Server

# The SDK's entry point, as the runtime container runs it. That container holds the module's
# dependencies only (dagger-io); this .venv also has httpx2 (openai and google-genai need it),
# which gql 4.4 prefers over httpx and which rejects the httpx.URL dagger-io hands it
# ("Expected str or httpx2.URL"): hidden here, as it is absent there.
_RUNTIME = ("import sys; sys.modules['httpx2'] = None; "
            "from dagger.mod.cli import app; sys.exit(app())")
_SCALARS = {"STRING_KIND": "String", "INTEGER_KIND": "Int", "BOOLEAN_KIND": "Boolean",
            "FLOAT_KIND": "Float", "VOID_KIND": "Void"}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


@dataclass(frozen=True)
class TypeRef:
    kind: str  # STRING_KIND ..., OBJECT_KIND, LIST_KIND
    name: str = ""  # object name
    optional: bool = False
    of: TypeRef | None = None

    def gql(self, *, as_input: bool) -> str:
        if self.kind == "OBJECT_KIND":
            base = "ID" if as_input else self.name
        elif self.kind == "LIST_KIND":
            assert self.of is not None
            base = f"[{self.of.gql(as_input=as_input)}]"
        else:
            base = _SCALARS[self.kind]
        return base if self.optional else base + "!"


@dataclass(frozen=True)
class ArgDef:
    name: str
    type: TypeRef
    description: str = ""
    default: str | None = None  # JSON
    default_path: str | None = None
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class FunctionDef:
    name: str
    returns: TypeRef
    args: tuple[ArgDef, ...]
    description: str = ""
    cache_policy: str | None = None

    def arg(self, name: str) -> ArgDef:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)


@dataclass
class ModuleDef:
    name: str  # the module's name (dagger.json)
    main: str  # its main object (PascalCase)
    description: str
    functions: dict[str, FunctionDef] = field(default_factory=dict)  # camelCase → def
    constructor: FunctionDef | None = None

    def sdl(self) -> str:
        lines = [f"type {self.main} {{"]
        for gql_name, fn in self.functions.items():
            lines.append(f"  {gql_name}{_args_sdl(fn)}: {fn.returns.gql(as_input=False)}")
        lines.append("}")
        ctor = _args_sdl(self.constructor) if self.constructor else ""
        lines.append(f"extend type Query {{ {camel(self.name)}{ctor}: {self.main}! }}")
        return "\n".join(lines)


def _args_sdl(fn: FunctionDef) -> str:
    if not fn.args:
        return ""
    parts = []
    for a in fn.args:
        t = a.type.gql(as_input=True)
        if a.default is not None or a.default_path is not None:
            t = t.removesuffix("!")  # the engine fills it in
        parts.append(f"{camel(a.name)}: {t}")
    return "(" + ", ".join(parts) + ")"


class FunctionFailed(Exception):
    """A function call (or a chained field) failed: the engine's error messages."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.get("message", "") for e in errors))

    @property
    def message(self) -> str:
        return str(self)


class Harness:
    """A stand-in for the Dagger engine for one module: GraphQL on 127.0.0.1, containers on the
    real Docker daemon, the module's runtime run by the SDK's own entry point."""

    def __init__(self, *, module_dir: Path, schema_file: Path, work_dir: Path,
                 image_map: Mapping[str, str] | None = None,
                 host_env: Mapping[str, str] | None = None,
                 runtime_env: Mapping[str, str] | None = None) -> None:
        self.module_dir = module_dir.resolve()  # holds dagger.json: the context root
        self.schema_file = schema_file
        self.work_dir = work_dir
        self.engine = Engine(work_dir=work_dir, image_map=image_map, host_env=host_env)
        self.server = Server(self)
        self.core = api.build(schema_file)
        self.module: ModuleDef | None = None
        self.schema = self.core
        self.runtime_env = dict(runtime_env or {})
        self.errors: list[str] = []  # every GraphQL error answered (for tests)
        self.runs: list[tuple[str, int, str]] = []  # (function, runtime exit code, stderr)
        self._cli = secrets.token_hex(16)
        self._http: httpx.Client | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Harness:
        self.server.start()
        self.server.sessions[self._cli] = Session(self._cli, self.schema)
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{self.server.port}",
                                  auth=(self._cli, ""), timeout=httpx.Timeout(None, connect=10))
        self.module = self.server.run(self._register())
        self.schema = api.build(self.schema_file, self.module.sdl(), _module_field)
        self.server.sessions[self._cli].schema = self.schema
        return self

    def close(self) -> None:
        try:
            if self._http is not None:
                self._http.close()
            self.server.run(self.engine.aclose(), timeout=300)
        finally:
            self.server.stop()

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the CLI's side -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the CLI's session sends queries (with ``auth``)."""
        return f"http://127.0.0.1:{self.server.port}/query"

    @property
    def auth(self) -> tuple[str, str]:
        return (self._cli, "")

    def call_query(self, function: str, select: str = "", **args: Any) -> str:
        """The GraphQL text of ``call`` (for a client that sends it itself, e.g. to cancel)."""
        assert self.module is not None
        fn = self.module.functions[camel(function)]
        values: dict[str, Any] = {}
        for name, value in args.items():
            if isinstance(value, Path):  # what the CLI uploads for a Directory or File flag
                arg = fn.arg(name)
                value = (self.host_file(value) if arg.type.name == "File"
                         else self.host_directory(value, arg.ignore))
            values[camel(name)] = value
        lit = ", ".join(f"{k}: {_literal(v)}" for k, v in values.items())
        field_ = f"{camel(function)}({lit})" if lit else camel(function)
        return f"{{ {camel(self.module.name)} {{ {field_} {select} }} }}"

    def query(self, text: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A raw GraphQL request as the CLI session (raises FunctionFailed on errors)."""
        assert self._http is not None, "start() the harness first"
        response = self._http.post("/query", json={"query": text,
                                                   "variables": dict(variables or {})})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise FunctionFailed(body["errors"])
        return body["data"]

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """A ``dagger.Client`` of the CLI's session: the SDK's own connection, query building and
        decoding, against this engine (use it in a test's event loop)."""
        import dagger
        import gql.transport.httpx as gql_httpx
        import httpx as real_httpx
        from dagger.client._core import Context
        from dagger.client._session import ConnectParams, SingleConnection

        # dagger-io hands gql httpx objects; see _RUNTIME for why httpx2 must not answer.
        saved = gql_httpx.httpx
        gql_httpx.httpx = real_httpx  # type: ignore[attr-defined]
        try:
            conn = SingleConnection(ConnectParams(port=self.server.port,
                                                  session_token=self._cli))
            async with conn:
                yield dagger.Client(Context(conn=conn))
        finally:
            gql_httpx.httpx = saved  # type: ignore[attr-defined]

    def secret_from_env(self, name: str) -> str:
        """What ``--openai-api-key=env:NAME`` does: a Secret read from the CLI's environment."""
        data = self.query('query($uri: String!) { secret(uri: $uri) { id } }',
                          {"uri": f"env://{name}"})
        return data["secret"]["id"]

    def host_service(self, *ports: int) -> str:
        """What ``--arg=tcp://localhost:PORT`` does (the CLI may pass several ports through
        ``Host.service``): a Service forwarding to the host's loopback."""
        forwards = ", ".join(f"{{backend: {int(p)}}}" for p in ports)
        data = self.query(f'{{ host {{ service(ports: [{forwards}]) {{ id }} }} }}')
        return data["host"]["service"]["id"]

    def host_file(self, path: Path) -> str:
        """What ``--baseline=./baseline.json`` does for a File argument: ``Host.file``."""
        data = self.query("query($p: String!) { host { file(path: $p) { id } } }",
                          {"p": str(path)})
        return data["host"]["file"]["id"]

    def host_directory(self, path: Path, exclude: Sequence[str] = ()) -> str:
        data = self.query("query($p: String!, $x: [String!]) { host { directory(path: $p, "
                          "exclude: $x) { id } } }", {"p": str(path), "x": list(exclude)})
        return data["host"]["directory"]["id"]

    def call(self, function: str, select: str = "", **args: Any) -> Any:
        """``dagger call FUNCTION --arg=value ... [chained fields]``. ``select`` is the GraphQL
        selection on the result (``"{ export(path: \\"...\\") }"``); a ``Path`` for a Directory
        argument is uploaded with that argument's ``Ignore`` patterns, one for a File argument
        through ``Host.file``, as the CLI does."""
        assert self.module is not None
        data = self.query(self.call_query(function, select, **args))
        return data[camel(self.module.name)][camel(function)]

    # --- the engine's side ----------------------------------------------------------------------

    async def _register(self) -> ModuleDef:
        data = json.loads(self._dagger_json())
        name = data["name"]
        main = "".join(w[:1].upper() + w[1:] for w in re.split(r"[-_]", name))
        call = self.engine.store.unique(FunctionCall(parent_name="", name=""))
        returned = await self._run(call, main, name, "(registration)")
        module_id = json.loads(returned)
        return parse_module(self.engine, module_id, name, main)

    def _dagger_json(self) -> str:
        return (self.module_dir / "dagger.json").read_text(encoding="utf-8")

    async def invoke(self, fn: FunctionDef | None, parent: ModuleObject | None,
                     args: Mapping[str, Any]) -> Any:
        """Call one function (``fn`` None: the constructor) with GraphQL argument values."""
        assert self.module is not None
        target = fn or self.module.constructor
        inputs: list[tuple[str, str]] = []
        for arg in target.args if target else ():
            value = args.get(camel(arg.name))
            if value is None and arg.default_path is not None:
                root = self.module_dir / arg.default_path.lstrip("/")
                value = await asyncio.get_running_loop().run_in_executor(
                    None, lambda r=root, a=arg: self.engine.load_host_directory(
                        r, a.ignore).id)
            if value is not None:
                inputs.append((arg.name, json.dumps(value)))
        call = self.engine.store.unique(FunctionCall(
            parent_name=self.module.main, name=fn.name if fn else "",
            parent=parent.state if parent else "{}", inputs=tuple(inputs)))
        returned = await self._run(call, self.module.main, self.module.name,
                                   fn.name if fn else "(constructor)")
        return json.loads(returned)

    async def _run(self, call: FunctionCall, main: str, module: str, what: str) -> str:
        token = secrets.token_hex(16)
        self.server.sessions[token] = Session(token, self.core, call)
        env = {**os.environ, **self.runtime_env,
               "DAGGER_SESSION_PORT": str(self.server.port), "DAGGER_SESSION_TOKEN": token,
               "DAGGER_MAIN_OBJECT": main, "DAGGER_MODULE": module,
               "PYTHONPATH": os.pathsep.join([str(self._entry_points()),
                                              str(self.module_dir / "ci" / "src")])}
        for k in list(env):
            if k.startswith(("OTEL_", "TRACEPARENT")):
                del env[k]
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _RUNTIME, env=env, cwd=str(self.work_dir),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
        finally:
            del self.server.sessions[token]
        stderr = self.engine.scrub((out + err).decode("utf-8", "replace"), f"runtime of {what}")
        self.runs.append((what, proc.returncode or 0, stderr))
        if call.error is not None:
            raise EngineError(_error_message(call.error), _error_values(call.error))
        if call.returned is None:
            raise EngineError(f"the module runtime for {what} exited with code "
                              f"{proc.returncode} without a result:\n{stderr[-3000:]}")
        return call.returned

    def _entry_points(self) -> Path:
        """Installed-package metadata with the module's entry point, as installing ci/ would
        write it (the SDK finds the main object through it)."""
        import tomllib

        project = tomllib.loads((self.module_dir / "ci" / "pyproject.toml").read_text())["project"]
        root = self.work_dir / "runtime-site"
        dist = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
        if not dist.is_dir():
            dist.mkdir(parents=True)
            (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                           f"Version: {project['version']}\n")
            entries = "".join(f"{k} = {v}\n"
                              for k, v in project["entry-points"]["dagger.mod"].items())
            (dist / "entry_points.txt").write_text(f"[dagger.mod]\n{entries}")
        return root


async def _module_field(ctx: Ctx, obj: Any, args: dict[str, Any],
                        info: graphql.GraphQLResolveInfo) -> Any:
    """A field of the module's object (a function call), or ``Query.<module>`` (the
    constructor)."""
    harness = ctx.harness
    module = harness.module
    assert module is not None
    if info.parent_type.name == "Query":
        state = await harness.invoke(None, None, args)
        return ModuleObject(kind=module.main, state=json.dumps(state))
    fn = module.functions[info.field_name]
    result = await harness.invoke(fn, obj, args)
    if fn.returns.kind == "OBJECT_KIND":
        return ctx.engine.store.get(result)
    return result


def parse_module(engine: Engine, module_id: str, name: str, main: str) -> ModuleDef:
    """The module's definition from the chains its runtime sent (Module.withObject → TypeDef
    .withFunction → Function.withArg ...)."""
    store = engine.store
    mod = store.get(module_id, Recipe)
    description = next((a["description"] for a in mod.args("withDescription")), "")
    out = ModuleDef(name=name, main=main, description=description)
    for obj_step in mod.args("withObject"):
        typedef = store.get(obj_step["object"], Recipe)
        obj_name = typedef.args("withObject")[0]["name"]
        if obj_name != main:
            continue
        for step in typedef.args("withFunction"):
            fn = _function(engine, store.get(step["function"], Recipe))
            out.functions[camel(fn.name)] = fn
        for step in typedef.args("withConstructor"):
            out.constructor = _function(engine, store.get(step["function"], Recipe))
    if not out.functions:
        raise EngineError(f"the module registered no functions on {main}")
    return out


def _function(engine: Engine, fn: Recipe) -> FunctionDef:
    origin, created = fn.steps[0]
    assert origin.endswith(">function"), fn.steps
    head = json.loads(created)
    args = []
    for a in fn.args("withArg"):
        args.append(ArgDef(
            name=a["name"], type=_typedef(engine, a["typeDef"]),
            description=a.get("description") or "", default=a.get("defaultValue"),
            default_path=a.get("defaultPath") or None, ignore=tuple(a.get("ignore") or ())))
    policy = [p["policy"] for p in fn.args("withCachePolicy")]
    return FunctionDef(
        name=head["name"], returns=_typedef(engine, head["returnType"]), args=tuple(args),
        description=next((d["description"] for d in fn.args("withDescription")), ""),
        cache_policy=policy[-1] if policy else None)


def _typedef(engine: Engine, id_: str) -> TypeRef:
    td = engine.store.get(id_, Recipe)
    kind, name, optional, of = "", "", False, None
    for step, raw in td.steps:
        a = json.loads(raw)
        if step == "withKind":
            kind = a["kind"]
        elif step == "withObject":
            kind, name = "OBJECT_KIND", a["name"]
        elif step == "withOptional":
            optional = bool(a["optional"])
        elif step == "withListOf":
            kind, of = "LIST_KIND", _typedef(engine, a["elementType"])
    if not kind:
        raise EngineError(f"type definition without a kind: {td.steps}")
    return TypeRef(kind, name, optional, of)


def _error_message(err: Recipe) -> str:
    origin, raw = err.steps[0]
    return json.loads(raw)["message"] if origin.endswith(">error") else str(err.steps)


def _error_values(err: Recipe) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in err.args("withValue"):
        try:
            out[a["name"]] = json.loads(a["value"])
        except ValueError:
            out[a["name"]] = a["value"]
    return out


def _literal(value: Any) -> str:
    """A GraphQL literal (for the CLI's query)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no GraphQL literal for {value!r}")

