"""The engine's GraphQL API, built from the engine's own schema (``schema-0.21.graphqls``) with
resolvers for the subset the module and the Python SDK use.

graphql-core parses and validates every request against that schema before anything runs: a
query the real engine's schema rejects is rejected here too. Fields outside the subset answer
an error that says so ("not modelled by the harness"), never a made-up value.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import graphql
from graphql import (
    GraphQLField,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    get_named_type,
)

from .engine import (
    ArgValue,
    CacheVolume,
    Container,
    Directory,
    Engine,
    EngineError,
    File,
    FunctionCall,
    Obj,
    Recipe,
    Secret,
    Service,
)

if TYPE_CHECKING:
    from .module import Harness

# Pure-data types built by chains of with* calls (module registration, errors).
BUILDERS = {"Module", "TypeDef", "Function", "SourceMap", "Error"}


@dataclass
class Session:
    """One client of the engine: the CLI, or one module function call's runtime."""

    token: str
    schema: GraphQLSchema
    call: FunctionCall | None = None


@dataclass
class Ctx:
    engine: Engine
    session: Session
    harness: Harness


@dataclass(eq=False)
class ModuleObject(Obj):
    """An instance of the module's main object (its state is JSON, as the engine keeps it)."""

    kind: str = ""
    state: str = "{}"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return self.kind


@dataclass(eq=False)
class HostObj(Obj):
    TYPE = "Host"


Resolver = Callable[[Ctx, Any, dict[str, Any], graphql.GraphQLResolveInfo], Awaitable[Any] | Any]
_RESOLVERS: dict[tuple[str, str], Resolver] = {}


def resolves(*keys: str) -> Callable[[Resolver], Resolver]:
    def register(fn: Resolver) -> Resolver:
        for key in keys:
            type_name, field_name = key.split(".")
            _RESOLVERS[(type_name, field_name)] = fn
        return fn
    return register


@functools.cache
def _core_sdl(path: Path) -> graphql.DocumentNode:
    return graphql.parse(path.read_text(encoding="utf-8"))


def build(schema_file: Path, module_sdl: str | None = None,
          module_resolver: Resolver | None = None) -> GraphQLSchema:
    """The core schema (and the module's types, as the engine adds them once it registered),
    every field wired to a resolver or to a "not modelled" error."""
    schema = graphql.build_ast_schema(_core_sdl(schema_file))
    module_types: set[str] = set()
    if module_sdl:
        extension = graphql.parse(module_sdl)
        module_types = {d.name.value for d in extension.definitions
                        if isinstance(d, graphql.ObjectTypeDefinitionNode)}
        schema = graphql.extend_schema(schema, extension)
    for type_ in schema.type_map.values():
        if isinstance(type_, GraphQLObjectType) and not type_.name.startswith("__"):
            for name, fld in type_.fields.items():
                if type_.name in module_types or (type_.name == "Query" and module_resolver and
                                                  name in _module_roots(module_sdl)):
                    fld.resolve = _wrap(type_.name, name, module_resolver)
                else:
                    fld.resolve = _wrap(type_.name, name, _pick(type_.name, name, fld))
    for iface in ("Node",):
        t = schema.type_map.get(iface)
        if isinstance(t, graphql.GraphQLInterfaceType):
            t.resolve_type = lambda obj, _info, _type: obj.type_name
    return schema


def _module_roots(sdl: str | None) -> set[str]:
    if not sdl:
        return set()
    out: set[str] = set()
    for d in graphql.parse(sdl).definitions:
        if isinstance(d, graphql.ObjectTypeExtensionNode) and d.name.value == "Query":
            out |= {f.name.value for f in d.fields or ()}
    return out


def _pick(type_name: str, name: str, fld: GraphQLField) -> Resolver | None:
    found = _RESOLVERS.get((type_name, name))
    if found is not None:
        return found
    ret = get_named_type(fld.type)
    if ret is not None and ret.name in BUILDERS and (type_name in BUILDERS or type_name == "Query"):
        return _builder
    if name == "id" and type_name in BUILDERS:
        return lambda _c, obj, _a, _i: obj.id
    return None


def _wrap(type_name: str, name: str, fn: Resolver | None) -> Callable[..., Any]:
    async def resolve(obj: Any, info: graphql.GraphQLResolveInfo, **args: Any) -> Any:
        if fn is None:
            raise graphql.GraphQLError(
                f"{type_name}.{name} is not modelled by the flightcheck Dagger harness "
                "(tests/dagger/dagger_harness): extend it, or keep the module to the subset")
        try:
            out = fn(info.context, obj, args, info)
            if isinstance(out, Awaitable):
                out = await out
        except EngineError as exc:
            raise graphql.GraphQLError(exc.message, extensions=exc.extensions or None) from exc
        return out
    return resolve


def _canon(args: Mapping[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, default=str)


def _builder(ctx: Ctx, obj: Any, args: dict[str, Any], info: graphql.GraphQLResolveInfo) -> Recipe:
    ret = get_named_type(info.return_type)
    assert isinstance(ret, GraphQLNamedType)
    step = (info.field_name, _canon(args))
    if isinstance(obj, Recipe) and obj.kind == ret.name:
        steps = (*obj.steps, step)
    else:
        origin = obj.id if isinstance(obj, Obj) else "Query"
        steps = ((f"{origin}>{info.field_name}", step[1]),)
    return ctx.engine.store.add(Recipe(kind=ret.name, steps=steps), steps)


def _not_default(info: graphql.GraphQLResolveInfo, args: Mapping[str, Any],
                 modelled: set[str]) -> None:
    """Refuse arguments the harness does not model when they differ from the schema's
    defaults (a silent ignore would make a test pass that the engine would not)."""
    parent = info.parent_type.fields[info.field_name]
    for name, value in args.items():
        if name in modelled:
            continue
        default = _default(parent.args[name])
        if value not in (default, None, [], False) or (value is False and default is True):
            raise EngineError(f"{info.parent_type.name}.{info.field_name}({name}: {value!r}) is "
                              "not modelled by the flightcheck Dagger harness")


def _default(arg: graphql.GraphQLArgument) -> Any:
    if arg.default_value is not graphql.Undefined:
        return arg.default_value
    node = arg.ast_node.default_value if arg.ast_node is not None else None
    return None if node is None else graphql.value_from_ast(node, arg.type)


# --- Query ---------------------------------------------------------------------------------------


@resolves("Query.container")
def _container(ctx: Ctx, _obj: Any, args: dict[str, Any], info: Any) -> Container:
    _not_default(info, args, set())
    return ctx.engine.store.add(Container(op="scratch"), "scratch")


@resolves("Query.node")
def _node(ctx: Ctx, _obj: Any, args: dict[str, Any], _info: Any) -> Obj:
    return ctx.engine.store.get(args["id"])


@resolves("Query.cacheVolume")
def _cache(ctx: Ctx, _obj: Any, args: dict[str, Any], info: Any) -> CacheVolume:
    _not_default(info, args, {"key"})
    return ctx.engine.store.add(CacheVolume(key=args["key"]), args["key"])


@resolves("Query.host")
def _host(ctx: Ctx, _obj: Any, _args: dict[str, Any], _info: Any) -> HostObj:
    return ctx.engine.store.add(HostObj(), "host")


@resolves("Host.directory")
def _host_dir(ctx: Ctx, _obj: Any, args: dict[str, Any], info: Any) -> Directory:
    _not_default(info, args, {"path", "exclude", "include", "noCache"})
    return ctx.engine.load_host_directory(Path(args["path"]), args.get("exclude") or [],
                                          args.get("include") or [])


@resolves("Host.file")
def _host_file(ctx: Ctx, _obj: Any, args: dict[str, Any], info: Any) -> File:
    _not_default(info, args, {"path", "noCache"})
    return ctx.engine.load_host_file(Path(args["path"]))


@resolves("Query.secret")
def _secret(ctx: Ctx, _obj: Any, args: dict[str, Any], info: Any) -> Secret:
    _not_default(info, args, {"uri"})
    uri = args["uri"]
    if not uri.startswith("env://"):
        raise EngineError(f"secret provider of {uri!r} is not modelled (only env://NAME)")
    name = uri.removeprefix("env://")
    if name not in ctx.engine.host_env:
        raise EngineError(f"secret env var not found: {name}")
    return ctx.engine.secret(name, ctx.engine.host_env[name])


@resolves("Query.setSecret")
def _set_secret(ctx: Ctx, _obj: Any, args: dict[str, Any], _info: Any) -> Secret:
    return ctx.engine.secret(args["name"], args["plaintext"])


@resolves("Query.currentFunctionCall")
def _current_call(ctx: Ctx, _obj: Any, _args: dict[str, Any], _info: Any) -> FunctionCall:
    if ctx.session.call is None:
        raise EngineError("not in a function call: this session is not a module runtime")
    return ctx.session.call


# --- the module runtime's side of a call ---------------------------------------------------------


@resolves("FunctionCall.parentName")
def _call_parent_name(_ctx: Ctx, call: FunctionCall, _a: Any, _i: Any) -> str:
    return call.parent_name


@resolves("FunctionCall.name")
def _call_name(_ctx: Ctx, call: FunctionCall, _a: Any, _i: Any) -> str:
    return call.name


@resolves("FunctionCall.parent")
def _call_parent(_ctx: Ctx, call: FunctionCall, _a: Any, _i: Any) -> str:
    return call.parent


@resolves("FunctionCall.inputArgs")
def _call_inputs(ctx: Ctx, call: FunctionCall, _a: Any, _i: Any) -> list[ArgValue]:
    return [ctx.engine.store.add(ArgValue(name=n, value=v), call.id, n, v) for n, v in call.inputs]


@resolves("FunctionCall.id")
def _call_id(_ctx: Ctx, call: FunctionCall, _a: Any, _i: Any) -> str:
    return call.id


@resolves("FunctionCall.returnValue")
def _call_return(_ctx: Ctx, call: FunctionCall, args: dict[str, Any], _i: Any) -> None:
    call.returned = args["value"]


@resolves("FunctionCall.returnError")
def _call_error(ctx: Ctx, call: FunctionCall, args: dict[str, Any], _i: Any) -> None:
    call.error = ctx.engine.store.get(args["error"], Recipe)


@resolves("FunctionCallArgValue.id", "FunctionCallArgValue.name", "FunctionCallArgValue.value")
def _arg_value(_ctx: Ctx, arg: ArgValue, _a: Any, info: Any) -> str:
    return {"id": arg.id, "name": arg.name, "value": arg.value}[info.field_name]


# --- Container -----------------------------------------------------------------------------------

# What each chained Container call may carry (anything else, when not the default, is refused).
_CONTAINER_OPS: dict[str, set[str]] = {
    "from": {"address"},
    "withEnvVariable": {"name", "value", "expand"},
    "withoutEnvVariable": {"name"},
    "withSecretVariable": {"name", "secret"},
    "withWorkdir": {"path", "expand"},
    "withUser": {"name"},
    "withEntrypoint": {"args", "keepDefaultArgs"},
    "withoutEntrypoint": {"keepDefaultArgs"},
    "withDefaultArgs": {"args"},
    "withExposedPort": {"port", "protocol", "description", "experimentalSkipHealthcheck"},
    "withMountedCache": {"path", "cache", "sharing"},
    "withServiceBinding": {"alias", "service"},
    "withoutDockerHealthcheck": set(),
    "withDirectory": {"path", "source", "expand"},
    "withFile": {"path", "source", "permissions", "expand"},
    "withNewFile": {"path", "contents", "permissions", "expand"},
    "withExec": {"args", "useEntrypoint", "expect", "insecureRootCapabilities", "expand"},
    "withRegistryAuth": {"address", "username", "secret"},
}
_ID_ARGS = {"secret": Secret, "cache": CacheVolume, "service": Service, "source": None}


def _chain(ctx: Ctx, c: Container, args: dict[str, Any], info: Any) -> Container:
    op = info.field_name
    _not_default(info, args, _CONTAINER_OPS[op])
    for name, kind in _ID_ARGS.items():
        if name in args and isinstance(args[name], str):
            want = kind or (File if op == "withFile" else Directory)
            ctx.engine.store.get(args[name], want)  # an unknown ID fails now, as in the engine
    return ctx.engine.store.add(Container(parent=c, op=op, args=args), c.id, op, _canon(args))


for _op in _CONTAINER_OPS:
    resolves(f"Container.{_op}")(_chain)


@resolves("Container.id", "Directory.id", "File.id", "Secret.id", "CacheVolume.id", "Service.id")
def _id(_ctx: Ctx, obj: Obj, _a: Any, _i: Any) -> str:
    return obj.id


@resolves("Container.sync")
async def _sync(ctx: Ctx, c: Container, _a: Any, _i: Any) -> str:
    await ctx.engine.evaluate(c)
    return c.id


async def _last(ctx: Ctx, c: Container) -> Any:
    ev = await ctx.engine.evaluate(c)
    if ev.last is None:
        raise EngineError("no command has been executed")
    return ev.last


@resolves("Container.stdout")
async def _stdout(ctx: Ctx, c: Container, _a: Any, _i: Any) -> str:
    return (await _last(ctx, c)).stdout


@resolves("Container.stderr")
async def _stderr(ctx: Ctx, c: Container, _a: Any, _i: Any) -> str:
    return (await _last(ctx, c)).stderr


@resolves("Container.exitCode")
async def _exit_code(ctx: Ctx, c: Container, _a: Any, _i: Any) -> int:
    return (await _last(ctx, c)).code


@resolves("Container.entrypoint")
async def _entrypoint(ctx: Ctx, c: Container, _a: Any, _i: Any) -> list[str]:
    return list((await ctx.engine.config(c)).entrypoint)


@resolves("Container.defaultArgs")
async def _default_args(ctx: Ctx, c: Container, _a: Any, _i: Any) -> list[str]:
    return list((await ctx.engine.config(c)).cmd)


@resolves("Container.user")
async def _user(ctx: Ctx, c: Container, _a: Any, _i: Any) -> str:
    return (await ctx.engine.config(c)).user


@resolves("Container.workdir")
async def _workdir(ctx: Ctx, c: Container, _a: Any, _i: Any) -> str:
    return (await ctx.engine.config(c)).workdir


@resolves("Container.envVariable")
async def _env_variable(ctx: Ctx, c: Container, args: dict[str, Any], _i: Any) -> str | None:
    return (await ctx.engine.config(c)).env_value(args["name"])


@resolves("Container.file")
def _ctr_file(ctx: Ctx, c: Container, args: dict[str, Any], info: Any) -> File:
    _not_default(info, args, {"path", "expand"})
    return ctx.engine.store.add(File(parent=c, path=args["path"]), c.id, "file", args["path"])


@resolves("Container.directory")
def _ctr_dir(ctx: Ctx, c: Container, args: dict[str, Any], info: Any) -> Directory:
    _not_default(info, args, {"path", "expand"})
    return ctx.engine.store.add(Directory(op="container", parent=c, path=args["path"]),
                                c.id, "directory", args["path"])


@resolves("Container.publish")
async def _publish(ctx: Ctx, c: Container, args: dict[str, Any], info: Any) -> str:
    # platformVariants / forcedCompression / mediaTypes: the daemon's push decides them here
    _not_default(info, args, {"address"})
    return await ctx.engine.publish(c, args["address"])


@resolves("Container.asService")
def _as_service(ctx: Ctx, c: Container, args: dict[str, Any], info: Any) -> Service:
    _not_default(info, args, {"args", "useEntrypoint", "insecureRootCapabilities"})
    svc = Service(container=c, args=tuple(args.get("args") or ()),
                  use_entrypoint=bool(args.get("useEntrypoint")),
                  insecure=bool(args.get("insecureRootCapabilities")))
    return ctx.engine.store.add(svc, c.id, "asService", _canon(args))


# --- Directory, File, Secret, Service ------------------------------------------------------------


@resolves("Directory.dockerBuild")
def _docker_build(ctx: Ctx, d: Directory, args: dict[str, Any], info: Any) -> Container:
    _not_default(info, args, {"dockerfile", "buildArgs", "target", "noInit"})
    spec = {**args, "context": d.id}
    return ctx.engine.store.add(Container(op="dockerBuild", args=spec), "dockerBuild", _canon(spec))


@resolves("Directory.directory")
def _sub_dir(ctx: Ctx, d: Directory, args: dict[str, Any], _i: Any) -> Directory:
    return ctx.engine.store.add(Directory(op="sub", parent=d, path=args["path"]),
                                d.id, "directory", args["path"])


@resolves("Directory.file")
def _dir_file(ctx: Ctx, d: Directory, args: dict[str, Any], _i: Any) -> File:
    return ctx.engine.store.add(File(parent=d, path=args["path"]), d.id, "file", args["path"])


@resolves("Directory.withNewFile")
def _dir_new_file(ctx: Ctx, d: Directory, args: dict[str, Any], info: Any) -> Directory:
    _not_default(info, args, {"path", "contents", "permissions"})
    new = Directory(op="withNewFile", parent=d, path=args["path"], contents=args["contents"],
                    permissions=args.get("permissions"))
    return ctx.engine.store.add(new, d.id, "withNewFile", _canon(args))


@resolves("Directory.entries")
async def _entries(ctx: Ctx, d: Directory, args: dict[str, Any], info: Any) -> list[str]:
    _not_default(info, args, set())
    root = await ctx.engine.materialize(d)
    return sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())


@resolves("Directory.sync")
async def _dir_sync(ctx: Ctx, d: Directory, _a: Any, _i: Any) -> str:
    await ctx.engine.materialize(d)
    return d.id


@resolves("Directory.export")
async def _dir_export(ctx: Ctx, d: Directory, args: dict[str, Any], info: Any) -> str:
    _not_default(info, args, {"path", "wipe"})
    return await ctx.engine.export_directory(d, args["path"], bool(args.get("wipe")))


@resolves("File.contents")
async def _contents(ctx: Ctx, f: File, args: dict[str, Any], info: Any) -> str:
    _not_default(info, args, set())
    return (await ctx.engine.file_path(f)).read_text(encoding="utf-8", errors="replace")


@resolves("File.export")
async def _file_export(ctx: Ctx, f: File, args: dict[str, Any], info: Any) -> str:
    _not_default(info, args, {"path", "allowParentDirPath"})
    return await ctx.engine.export_file(f, args["path"])


@resolves("File.name")
def _file_name(_ctx: Ctx, f: File, _a: Any, _i: Any) -> str:
    return Path(f.path).name


@resolves("Host.service")
def _host_service(ctx: Ctx, _obj: Any, args: dict[str, Any], info: Any) -> Service:
    _not_default(info, args, {"ports", "host"})
    if args.get("host", "localhost") not in ("localhost", "127.0.0.1"):
        raise EngineError("Host.service(host) other than localhost is not modelled by the "
                          "flightcheck Dagger harness")
    ports = args["ports"]
    if not ports:
        raise EngineError("Host.service: an empty set of ports is not valid")
    if any((p.get("frontend") or p["backend"]) != p["backend"] or
           p.get("protocol", "TCP") != "TCP" for p in ports):
        raise EngineError("Host.service: only TCP with frontend = backend is modelled by the "
                          "flightcheck Dagger harness")
    svc = Service(host_ports=tuple(sorted(p["backend"] for p in ports)))
    return ctx.engine.store.add(svc, "host-service", svc.host_ports)


@resolves("Secret.name")
def _secret_name(_ctx: Ctx, s: Secret, _a: Any, _i: Any) -> str:
    return s.name


@resolves("Service.up")
async def _up(ctx: Ctx, svc: Service, args: dict[str, Any], info: Any) -> None:
    _not_default(info, args, {"ports", "random"})
    ports = [(p["frontend"] or p["backend"], p["backend"]) for p in args.get("ports") or []]
    await ctx.engine.up(svc, ports, bool(args.get("random")))
