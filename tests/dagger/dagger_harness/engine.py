"""The harness's objects (containers, directories, files, secrets, services) and how they run on
the real Docker daemon.

Objects are recipes, as in Dagger: ``with_*`` calls build new objects, nothing runs until a
leaf needs it (``stdout``, ``sync``, ``file(...).contents``, ``export``, a service binding).
An object's ID is derived from its recipe, so the same chain is the same object and is
evaluated once per engine (Dagger's cache, reduced to memory and to one engine's lifetime).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, TypeVar

import docker
import docker.errors
from docker.types import Mount
from docker.utils.build import PatternMatcher

LABEL = "flightcheck.dagger-harness"  # on every container, network, image and volume made here
HEALTH_WAIT_S = 300.0  # how long dependents wait for a service to become healthy
STOP_GRACE_S = 10  # SIGTERM, then SIGKILL, when a service is no longer needed

T = TypeVar("T", bound="Obj")


class EngineError(Exception):
    """An error the engine reports to the client (a GraphQL error), with extensions."""

    def __init__(self, message: str, extensions: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = dict(extensions or {})


def exec_error(cmd: list[str], code: int, stdout: str, stderr: str) -> EngineError:
    """What the engine answers for a failed exec: the SDK turns ``_type`` EXEC_ERROR into
    ``dagger.ExecError`` with these fields."""
    shown = " ".join(cmd)
    return EngineError(
        f'process "{shown}" did not complete successfully: exit code: {code}',
        {"_type": "EXEC_ERROR", "cmd": cmd, "exitCode": code, "stdout": stdout,
         "stderr": stderr},
    )


# --- objects -----------------------------------------------------------------------------------


@dataclass(eq=False)
class Obj:
    TYPE: ClassVar[str] = ""
    id: str = field(default="", init=False)

    @property
    def type_name(self) -> str:
        return self.TYPE


@dataclass(eq=False)
class Recipe(Obj):
    """A pure-data object (Module, TypeDef, Function, ...): the steps that built it."""

    kind: str = ""
    steps: tuple[tuple[str, str], ...] = ()  # (field, canonical JSON of its args)

    @property
    def type_name(self) -> str:
        return self.kind

    def args(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(a) for f, a in self.steps if f == name]


@dataclass(eq=False)
class Secret(Obj):
    TYPE: ClassVar[str] = "Secret"
    name: str = ""
    value: str = field(default="", repr=False)  # never in an ID, a log or a repr


@dataclass(eq=False)
class CacheVolume(Obj):
    TYPE: ClassVar[str] = "CacheVolume"
    key: str = ""

    @property
    def volume(self) -> str:
        return "fc-dagger-harness-cache-" + hashlib.sha256(self.key.encode()).hexdigest()[:16]


@dataclass(eq=False)
class Directory(Obj):
    TYPE: ClassVar[str] = "Directory"
    op: str = ""  # host | sub | container | withNewFile
    parent: Obj | None = None
    path: str = ""
    host: Path | None = None  # op host: the snapshot
    contents: str = ""
    permissions: int | None = None


@dataclass(eq=False)
class File(Obj):
    TYPE: ClassVar[str] = "File"
    parent: Obj | None = None  # a Directory or a Container
    path: str = ""


@dataclass(eq=False)
class Container(Obj):
    TYPE: ClassVar[str] = "Container"
    parent: Container | None = None
    op: str = ""
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Service(Obj):
    TYPE: ClassVar[str] = "Service"
    container: Container | None = None
    args: tuple[str, ...] = ()
    use_entrypoint: bool = False
    insecure: bool = False
    host_ports: tuple[int, ...] = ()  # Host.service: the host's ports it forwards (none: a container)


@dataclass(eq=False)
class FunctionCall(Obj):
    """The call a module runtime serves (``currentFunctionCall``)."""

    TYPE: ClassVar[str] = "FunctionCall"
    parent_name: str = ""
    name: str = ""
    parent: str = "{}"
    inputs: tuple[tuple[str, str], ...] = ()  # (name, JSON value)
    returned: str | None = None
    error: Recipe | None = None


@dataclass(eq=False)
class ArgValue(Obj):
    TYPE: ClassVar[str] = "FunctionCallArgValue"
    name: str = ""
    value: str = ""


class Store:
    """ID → object. IDs come from recipes: one recipe, one object (and one evaluation)."""

    def __init__(self) -> None:
        self._objects: dict[str, Obj] = {}

    def add(self, obj: T, *key: object) -> T:
        digest = hashlib.sha256(repr((obj.type_name, key)).encode()).hexdigest()[:24]
        id_ = f"{obj.type_name}:{digest}"
        found = self._objects.get(id_)
        if found is not None:
            return found  # type: ignore[return-value]
        obj.id = id_
        self._objects[id_] = obj
        return obj

    def unique(self, obj: T) -> T:
        return self.add(obj, uuid.uuid4().hex)

    def get(self, id_: str, kind: type[T] | None = None) -> T:
        obj = self._objects.get(id_)
        if obj is None:
            raise EngineError(f"unknown object ID {id_!r}")
        if kind is not None and not isinstance(obj, kind):
            raise EngineError(f"{id_!r} is a {obj.type_name}, not a {kind.TYPE}")
        return obj  # type: ignore[return-value]


# --- container state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    port: int
    protocol: str = "TCP"
    skip_healthcheck: bool = False


@dataclass(frozen=True)
class Config:
    """The image configuration and what Dagger keeps beside it, as of one container."""

    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    ports: tuple[Port, ...] = ()
    secrets: tuple[tuple[str, str], ...] = ()  # (variable, Secret ID)
    mounts: tuple[tuple[str, str], ...] = ()  # (target, CacheVolume ID)
    bindings: tuple[tuple[str, str], ...] = ()  # (alias, Service ID)
    healthcheck: tuple[tuple[str, Any], ...] | None = None  # Docker's Healthcheck config
    registry_auth: tuple[tuple[str, str, str], ...] = ()  # (registry host, username, Secret ID)

    def with_env(self, name: str, value: str | None) -> Config:
        env = tuple((k, v) for k, v in self.env if k != name)
        return replace(self, env=env if value is None else (*env, (name, value)))

    def env_value(self, name: str) -> str | None:
        return dict(self.env).get(name)

    def abs(self, path: str) -> str:
        return str(PurePosixPath(self.workdir or "/", path))


@dataclass(frozen=True)
class Write:
    """A file-system change not yet in the container's image (applied before its next exec)."""

    dest: str
    host: Path | None = None  # a directory's contents, or one file
    data: bytes | None = None
    mode: int | None = None


@dataclass(frozen=True)
class ExecResult:
    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Evaluated:
    image: str
    pending: tuple[Write, ...] = ()
    last: ExecResult | None = None


def image_config(attrs: Mapping[str, Any]) -> Config:
    cfg = attrs.get("Config") or {}
    env = tuple(tuple(e.split("=", 1)) for e in cfg.get("Env") or [] if "=" in e)
    health = cfg.get("Healthcheck")
    if health and health.get("Test") and health["Test"][0] != "NONE":
        healthcheck: tuple[tuple[str, Any], ...] | None = tuple(sorted(health.items()))
    else:
        healthcheck = None
    return Config(
        env=env,  # type: ignore[arg-type]
        workdir=cfg.get("WorkingDir") or "",
        user=cfg.get("User") or "",
        entrypoint=tuple(cfg.get("Entrypoint") or ()),
        cmd=tuple(cfg.get("Cmd") or ()),
        healthcheck=healthcheck,
    )


# --- the engine --------------------------------------------------------------------------------


@dataclass
class _Running:
    container: str
    alias: str
    nets: dict[str, int] = field(default_factory=dict)  # network → dependents on it
    releases: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    ips: dict[str, str] = field(default_factory=dict)


@dataclass
class ServiceLog:
    alias: str
    command: list[str]
    logs: str
    exit_code: int | None


class Engine:
    """Evaluates objects on Docker. Every Docker call runs in a worker thread, so the GraphQL
    server's event loop stays responsive; one evaluation per object, shared by concurrent
    requests (single flight)."""

    def __init__(self, *, work_dir: Path, image_map: Mapping[str, str] | None = None,
                 host_env: Mapping[str, str] | None = None) -> None:
        self.store = Store()
        self.token = uuid.uuid4().hex[:10]
        self.work_dir = work_dir
        self.image_map = dict(image_map or {})  # Container.from address → a local image
        self.host_env = dict(host_env or {})  # what env:// secrets read (the CLI's environment)
        self.client = docker.from_env(timeout=600)
        self.api = self.client.api
        self._pool = ThreadPoolExecutor(max_workers=48, thread_name_prefix="harness-docker")
        self._tasks: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._running: dict[str, _Running] = {}
        self._service_locks: dict[str, asyncio.Lock] = {}
        self._images: list[str] = []  # committed by execs: removed at close
        self._networks = 0
        self.service_logs: list[ServiceLog] = []  # every service's output, for tests
        self.exec_log: list[tuple[list[str], int, float]] = []  # every exec: args, code, seconds
        self.secret_leaks: list[str] = []  # where a secret's value showed up unscrubbed
        self._caps_missing = _caps_missing()

    # --- plumbing ----------------------------------------------------------------------------

    async def _io(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def _once(self, kind: str, obj: Obj, make: Callable[[], Awaitable[Any]]) -> Any:
        key = (kind, obj.id)
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._tasks[key] = task
        return await asyncio.shield(task)

    def _tmp(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_dir))

    def scrub(self, text: str, where: str) -> str:
        """Secret values in exec output become ***, as the engine scrubs them (and each
        unscrubbed sighting is recorded for tests)."""
        for obj in list(self.store._objects.values()):  # noqa: SLF001
            if isinstance(obj, Secret) and obj.value and obj.value in text:
                self.secret_leaks.append(f"{where}: the value of secret {obj.name!r}")
                text = text.replace(obj.value, "***")
        return text

    # --- host side ---------------------------------------------------------------------------

    def load_host_directory(self, path: Path, exclude: Iterable[str] = (),
                            include: Iterable[str] = ()) -> Directory:
        """A snapshot of a host directory filtered like Dagger filters it (.dockerignore
        patterns, ``!`` re-includes; ``include`` keeps only what matches). Content-addressed:
        the same files are the same Directory."""
        root = path.resolve()
        if not root.is_dir():
            raise EngineError(f"host directory {path} does not exist")
        keep = _select(root, list(exclude), list(include))
        snap = self._tmp("hostdir-")
        digest = hashlib.sha256()
        for rel in sorted(keep):
            src, dst = root / rel, snap / rel
            if src.is_symlink():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(os.readlink(src), dst)
                digest.update(f"L{rel}\0{os.readlink(src)}\0".encode())
            elif src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
                digest.update(f"D{rel}\0".encode())
            elif src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                digest.update(f"F{rel}\0{src.stat().st_mode & 0o777}\0".encode())
                digest.update(src.read_bytes())
        found = self.store.add(Directory(op="host", host=snap), "host", digest.hexdigest())
        if found.host != snap:
            shutil.rmtree(snap, ignore_errors=True)  # the same content was loaded before
        return found

    def load_host_file(self, path: Path) -> File:
        """A snapshot of one host file (what the CLI sends for a File argument), content-addressed
        like a directory: the same bytes under the same name are the same File."""
        src = path.resolve()
        if not src.is_file():
            raise EngineError(f"host file {path}: no such file")
        snap = self._tmp("hostfile-")
        shutil.copy2(src, snap / src.name)
        digest = hashlib.sha256(f"{src.name}\0{src.stat().st_mode & 0o777}\0".encode())
        digest.update(src.read_bytes())
        parent = self.store.add(Directory(op="host", host=snap), "hostfile", digest.hexdigest())
        if parent.host != snap:
            shutil.rmtree(snap, ignore_errors=True)  # the same file was loaded before
        return self.store.add(File(parent=parent, path=src.name), parent.id, "file", src.name)

    def secret(self, name: str, value: str) -> Secret:
        return self.store.unique(Secret(name=name, value=value))

    # --- directories and files ---------------------------------------------------------------

    async def materialize(self, d: Directory) -> Path:
        """The directory's contents on the host (read-only for callers)."""
        return await self._once("dir", d, lambda: self._materialize(d))

    async def _materialize(self, d: Directory) -> Path:
        if d.op == "host":
            assert d.host is not None
            return d.host
        if d.op == "sub":
            assert isinstance(d.parent, Directory)
            base = await self.materialize(d.parent)
            target = _inside(base, d.path)
            if not target.is_dir():
                raise EngineError(f"lstat {d.path}: no such file or directory")
            return target
        if d.op == "container":
            assert isinstance(d.parent, Container)
            return await self._extract(d.parent, d.path, want_dir=True)
        if d.op == "withNewFile":
            assert isinstance(d.parent, Directory)
            base = await self.materialize(d.parent)
            return await self._io(self._with_new_file, base, d)
        raise EngineError(f"directory op {d.op!r} is not modelled by the harness")

    def _with_new_file(self, base: Path, d: Directory) -> Path:
        out = self._tmp("dir-")
        shutil.copytree(base, out, symlinks=True, dirs_exist_ok=True)
        target = _inside(out, d.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(d.contents, encoding="utf-8")
        target.chmod(d.permissions if d.permissions is not None else 0o644)
        return out

    async def file_path(self, f: File) -> Path:
        return await self._once("file", f, lambda: self._file_path(f))

    async def _file_path(self, f: File) -> Path:
        if isinstance(f.parent, Directory):
            path = _inside(await self.materialize(f.parent), f.path)
        else:
            assert isinstance(f.parent, Container)
            path = await self._extract(f.parent, f.path, want_dir=False)
        if not path.is_file():
            raise EngineError(f"lstat {f.path}: no such file or directory")
        return path

    async def export_directory(self, d: Directory, dest: str, wipe: bool) -> str:
        return await self._io(_export_dir, await self.materialize(d), Path(dest), wipe)

    async def export_file(self, f: File, dest: str) -> str:
        return await self._io(_export_file, await self.file_path(f), Path(dest))

    # --- containers --------------------------------------------------------------------------

    async def config(self, c: Container) -> Config:
        return await self._once("config", c, lambda: self._config(c))

    async def _config(self, c: Container) -> Config:
        op, a = c.op, c.args
        if op == "scratch":
            return Config()
        if op in ("from", "dockerBuild"):
            ev = await self.evaluate(c)
            attrs = await self._io(self.api.inspect_image, ev.image)
            return image_config(attrs)
        assert c.parent is not None
        cfg = await self.config(c.parent)
        if op == "withEnvVariable":
            value = a["value"]
            if a.get("expand"):
                value = _expand(value, dict(cfg.env))
            return cfg.with_env(a["name"], value)
        if op == "withoutEnvVariable":
            return cfg.with_env(a["name"], None)
        if op == "withSecretVariable":
            secrets = tuple(s for s in cfg.secrets if s[0] != a["name"])
            return replace(cfg, secrets=(*secrets, (a["name"], a["secret"])))
        if op == "withWorkdir":
            return replace(cfg, workdir=cfg.abs(a["path"]))
        if op == "withUser":
            return replace(cfg, user=a["name"])
        if op == "withEntrypoint":
            keep = a.get("keepDefaultArgs", False)
            return replace(cfg, entrypoint=tuple(a["args"]), cmd=cfg.cmd if keep else ())
        if op == "withoutEntrypoint":
            keep = a.get("keepDefaultArgs", False)
            return replace(cfg, entrypoint=(), cmd=cfg.cmd if keep else ())
        if op == "withDefaultArgs":
            return replace(cfg, cmd=tuple(a["args"]))
        if op == "withExposedPort":
            port = Port(a["port"], a.get("protocol") or "TCP",
                        bool(a.get("experimentalSkipHealthcheck")))
            kept = tuple(p for p in cfg.ports if (p.port, p.protocol) != (port.port, port.protocol))
            return replace(cfg, ports=(*kept, port))
        if op == "withMountedCache":
            mounts = tuple(m for m in cfg.mounts if m[0] != cfg.abs(a["path"]))
            return replace(cfg, mounts=(*mounts, (cfg.abs(a["path"]), a["cache"])))
        if op == "withServiceBinding":
            bindings = tuple(b for b in cfg.bindings if b[0] != a["alias"])
            return replace(cfg, bindings=(*bindings, (a["alias"], a["service"])))
        if op == "withoutDockerHealthcheck":
            return replace(cfg, healthcheck=None)
        if op == "withRegistryAuth":
            host = registry_host(a["address"])
            kept = tuple(r for r in cfg.registry_auth if r[0] != host)
            return replace(cfg, registry_auth=(*kept, (host, a["username"], a["secret"])))
        return cfg  # file-system ops and execs leave the configuration alone

    async def evaluate(self, c: Container) -> Evaluated:
        return await self._once("eval", c, lambda: self._evaluate(c))

    async def _evaluate(self, c: Container) -> Evaluated:
        op, a = c.op, c.args
        if op == "from":
            return Evaluated(await self._local_image(a["address"]))
        if op == "dockerBuild":
            return Evaluated(await self._build(a))
        if op == "scratch":
            raise EngineError("the harness does not model scratch containers: start with from()")
        assert c.parent is not None
        ev = await self.evaluate(c.parent)
        if op == "withDirectory":
            cfg = await self.config(c.parent)
            src = await self.materialize(self.store.get(a["source"], Directory))
            return replace(ev, pending=(*ev.pending, Write(cfg.abs(a["path"]), host=src)))
        if op == "withFile":
            cfg = await self.config(c.parent)
            src = await self.file_path(self.store.get(a["source"], File))
            mode = a.get("permissions")
            return replace(ev, pending=(*ev.pending, Write(cfg.abs(a["path"]), host=src,
                                                            mode=mode)))
        if op == "withNewFile":
            cfg = await self.config(c.parent)
            mode = a.get("permissions") or 0o644
            write = Write(cfg.abs(a["path"]), data=a["contents"].encode(), mode=mode)
            return replace(ev, pending=(*ev.pending, write))
        if op == "withExec":
            cfg = await self.config(c.parent)
            return await self._exec(ev, cfg, a)
        return ev

    async def _local_image(self, address: str) -> str:
        ref = self.image_map.get(address, address)
        try:
            attrs = await self._io(self.api.inspect_image, ref)
        except docker.errors.ImageNotFound:
            raise EngineError(
                f"{address}: no such image here and no registry to pull from (the harness "
                "never pulls: build it locally or map it with image_map)") from None
        return attrs["Id"]

    async def _build(self, a: Mapping[str, Any]) -> str:
        ctx = await self.materialize(self.store.get(a["context"], Directory))
        dockerfile = a.get("dockerfile") or "Dockerfile"
        build_args = {b["name"]: b["value"] for b in a.get("buildArgs") or []}
        return await self._io(self._build_sync, ctx, dockerfile, build_args, a.get("target") or None)

    def _build_sync(self, ctx: Path, dockerfile: str, build_args: dict[str, str],
                    target: str | None) -> str:
        lines: list[str] = []
        image = ""
        error = ""
        for chunk in self.api.build(path=str(ctx), dockerfile=dockerfile, rm=True, forcerm=True,
                                    pull=False, decode=True, buildargs=build_args, target=target,
                                    labels={LABEL: "docker-build"}):
            if "stream" in chunk:
                lines.append(chunk["stream"])
            if "aux" in chunk and "ID" in chunk["aux"]:
                image = chunk["aux"]["ID"]
            if "error" in chunk:
                error = chunk["error"]
        if error or not image:
            raise _build_error(error or "the build produced no image", "".join(lines))
        # Tagged, not dangling: the classic builder's layer cache survives for the next run.
        self.api.tag(image, "fc-dagger-harness/docker-build", image.split(":")[-1][:12])
        return image

    def _create(self, image: str, argv: list[str], cfg: Config, env: list[str], *,
                network: str | None, aliases: list[str] | None, insecure: bool,
                healthcheck: Mapping[str, Any] | None = None,
                on_host: tuple[str, ...] = ()) -> str:
        mounts = [Mount(target, self.store.get(cache, CacheVolume).volume, type="volume",
                        labels={LABEL: "cache"})
                  for target, cache in cfg.mounts]
        binds: dict[str, dict[str, str]] = {}
        extra: dict[str, Any] = {}
        if insecure:
            # Dagger: all root capabilities and a writable cgroupfs (the memory guard needs it).
            # This daemon cannot start privileged containers: every capability it can grant,
            # and the memory cgroup hierarchy bind-mounted writable.
            extra = {"cap_add": ["ALL"], "cap_drop": self._caps_missing,
                     "security_opt": ["apparmor=unconfined", "seccomp=unconfined"]}
            for hierarchy in _writable_cgroup_mounts():
                binds[hierarchy] = {"bind": hierarchy, "mode": "rw"}
        if on_host:
            # Host.service bindings: the host's loopback under each alias (see _host_aliases).
            extra["extra_hosts"] = dict.fromkeys(on_host, "127.0.0.1")
            network = "host"
        host_config = self.api.create_host_config(
            init=True, mounts=mounts, binds=binds, network_mode=network or "bridge", **extra)
        networking = None
        if network and aliases and not on_host:
            networking = self.api.create_networking_config(
                {network: self.api.create_endpoint_config(aliases=aliases)})
        created = self.api.create_container(
            image, entrypoint=argv[:1], command=argv[1:], user=cfg.user or "0",
            working_dir=cfg.workdir or "/", environment=env, host_config=host_config,
            networking_config=networking, labels={LABEL: self.token},
            # An exec never runs the image's HEALTHCHECK; a service runs the one it keeps.
            healthcheck=dict(healthcheck) if healthcheck else {"Test": ["NONE"]},
        )
        return created["Id"]

    def _put(self, container: str, writes: tuple[Write, ...]) -> None:
        if writes:
            self.api.put_archive(container, "/", _tar(writes))

    async def _env(self, cfg: Config) -> tuple[list[str], list[str]]:
        """Docker env (plain + secret values) and the secret values (for scrubbing)."""
        env = [f"{k}={v}" for k, v in cfg.env]
        values = []
        for name, sid in cfg.secrets:
            secret = self.store.get(sid, Secret)
            env.append(f"{name}={secret.value}")
            values.append(secret.value)
        return env, values

    async def _exec(self, ev: Evaluated, cfg: Config, a: Mapping[str, Any]) -> Evaluated:
        args = list(a["args"])
        if a.get("useEntrypoint") and cfg.entrypoint:
            args = [*cfg.entrypoint, *args]
        if a.get("expand"):
            args = [_expand(x, dict(cfg.env)) for x in args]
        if not args:
            raise EngineError("no command has been set")
        env, _ = await self._env(cfg)
        started = time.monotonic()
        on_host = self._host_aliases(cfg.bindings)
        network, release = await self._bind(() if on_host else cfg.bindings)
        try:
            image, result = await self._io(self._exec_sync, ev, cfg, args, env, network,
                                           bool(a.get("insecureRootCapabilities")), on_host)
        finally:
            await release()
        stdout = self.scrub(result.stdout, f"stdout of {args[:3]}")
        stderr = self.scrub(result.stderr, f"stderr of {args[:3]}")
        self.exec_log.append((args, result.code, round(time.monotonic() - started, 1)))
        expect = a.get("expect") or "SUCCESS"
        if (expect == "SUCCESS" and result.code != 0) or (expect == "FAILURE" and result.code == 0):
            if expect == "FAILURE":
                raise EngineError(f"process {' '.join(args)!r} succeeded, a failure was expected")
            raise exec_error(args, result.code, stdout, stderr)
        return Evaluated(image, (), ExecResult(result.code, stdout, stderr))

    def _exec_sync(self, ev: Evaluated, cfg: Config, args: list[str], env: list[str],
                   network: str | None, insecure: bool,
                   on_host: tuple[str, ...] = ()) -> tuple[str, ExecResult]:
        cid = self._create(ev.image, args, cfg, env, network=network, aliases=None,
                           insecure=insecure, on_host=on_host)
        try:
            self._put(cid, ev.pending)
            self.api.start(cid)
            code = self.api.wait(cid)["StatusCode"]
            out = self.api.logs(cid, stdout=True, stderr=False).decode("utf-8", "replace")
            err = self.api.logs(cid, stdout=False, stderr=True).decode("utf-8", "replace")
            image = self.api.commit(cid, conf={"Labels": {LABEL: self.token}})["Id"]
            self._images.append(image)
        finally:
            self.api.remove_container(cid, force=True)
        return image, ExecResult(code, out, err)

    async def _extract(self, c: Container, path: str, *, want_dir: bool) -> Path:
        ev = await self.evaluate(c)
        cfg = await self.config(c)
        full = cfg.abs(path)
        return await self._io(self._extract_sync, ev, full, want_dir)

    def _extract_sync(self, ev: Evaluated, full: str, want_dir: bool) -> Path:
        cid = self.api.create_container(ev.image, entrypoint=["true"], labels={LABEL: self.token})
        out = self._tmp("extract-")
        try:
            self._put(cid, ev.pending)
            try:
                stream, stat = self.api.get_archive(cid, full)
            except docker.errors.NotFound:
                raise EngineError(f"lstat {full}: no such file or directory") from None
            is_dir = bool(stat["mode"] & (1 << 31))
            if want_dir != is_dir:
                raise EngineError(f"{full} is {'a directory' if is_dir else 'not a directory'}")
            data = b"".join(stream)
        finally:
            self.api.remove_container(cid, force=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(out, filter="tar")
        return out / PurePosixPath(full).name

    # --- publishing --------------------------------------------------------------------------

    async def publish(self, c: Container, address: str) -> str:
        """``Container.publish``: the container's state pushed to ``address`` by the daemon,
        with the credentials ``withRegistryAuth`` attached for its registry; answers as the
        engine does, ``ADDRESS@sha256:…`` (the tag kept; ``:latest`` when none was given)."""
        ev = await self.evaluate(c)
        cfg = await self.config(c)
        ref = address if ":" in address.rsplit("/", 1)[-1] else f"{address}:latest"
        repo, _, tag = ref.rpartition(":")
        auth = None
        for host, username, sid in cfg.registry_auth:
            if host == registry_host(ref):
                auth = {"username": username, "password": self.store.get(sid, Secret).value}
        digest = await self._io(self._push_sync, ev, repo, tag, auth)
        return f"{ref}@{digest}"

    def _push_sync(self, ev: Evaluated, repo: str, tag: str,
                   auth: dict[str, str] | None) -> str:
        image = ev.image
        if ev.pending:  # file-system changes not yet in an image: commit them first
            cid = self.api.create_container(image, entrypoint=["true"],
                                            labels={LABEL: self.token})
            try:
                self._put(cid, ev.pending)
                image = self.api.commit(cid, conf={"Labels": {LABEL: self.token}})["Id"]
                self._images.append(image)
            finally:
                self.api.remove_container(cid, force=True)
        self.api.tag(image, repo, tag)
        digest, errors = "", []
        try:
            for chunk in self.api.push(repo, tag, auth_config=auth, stream=True, decode=True):
                if "error" in chunk:
                    errors.append(str(chunk["error"]))
                found = (chunk.get("aux") or {}).get("Digest")
                if found:
                    digest = str(found)
        finally:
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_image(f"{repo}:{tag}", noprune=True)
        if errors or not digest.startswith("sha256:"):
            why = self.scrub("; ".join(errors) or "the registry returned no digest",
                             f"publish {repo}")
            raise EngineError(f"failed to publish {repo}:{tag}: {why}")
        return digest

    # --- services ----------------------------------------------------------------------------

    def service_command(self, svc: Service, cfg: Config) -> list[str]:
        args = list(svc.args) or [*cfg.cmd]
        if (svc.use_entrypoint or not svc.args) and cfg.entrypoint:
            args = [*cfg.entrypoint, *args]
        if not args:
            raise EngineError("no command has been set for the service")
        return args

    async def _bind(self, bindings: tuple[tuple[str, str], ...],
                    ) -> tuple[str | None, Callable[[], Awaitable[None]]]:
        """A network on which every bound service answers at its alias, started (and healthy)
        before the caller runs; the release stops what no one needs any more."""
        if not bindings:
            async def nothing() -> None:
                return None
            return None, nothing
        self._networks += 1
        name = f"fc-dagger-harness-{self.token}-{self._networks}"
        await self._io(self.api.create_network, name, driver="bridge", labels={LABEL: self.token})
        started: list[str] = []

        async def release() -> None:
            for sid in reversed(started):
                with contextlib.suppress(Exception):
                    await self._release(sid, name)
            with contextlib.suppress(docker.errors.APIError):
                await self._io(self.api.remove_network, name)

        try:
            for alias, sid in bindings:
                await self._start(self.store.get(sid, Service), name, alias)
                started.append(sid)
        except BaseException:
            await asyncio.shield(release())
            raise
        return name, release

    def _host_aliases(self, bindings: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
        """The aliases of ``Host.service`` bindings. Such an exec runs in the host's network
        namespace with each alias naming 127.0.0.1: every host port is reachable, not only the
        forwarded ones (Dagger tunnels just those through the CLI's session)."""
        on_host = tuple(alias for alias, sid in bindings
                        if self.store.get(sid, Service).host_ports)
        if on_host and len(on_host) != len(bindings):
            raise EngineError("a Host.service binding beside container-service bindings is not "
                              "modelled by the flightcheck Dagger harness")
        return on_host

    async def _start(self, svc: Service, network: str, alias: str) -> _Running:
        if svc.host_ports:
            raise EngineError("a Host.service bound to a service (not to an exec) is not "
                              "modelled by the flightcheck Dagger harness")
        lock = self._service_locks.setdefault(svc.id, asyncio.Lock())
        async with lock:
            running = self._running.get(svc.id)
            if running is not None:  # one instance per service, shared by its dependents
                if network not in running.nets:
                    await self._io(self.api.connect_container_to_network, running.container,
                                   network, aliases=[alias])
                    running.ips[network] = await self._ip(running.container, network)
                running.nets[network] = running.nets.get(network, 0) + 1
                return running
            assert svc.container is not None
            cfg = await self.config(svc.container)
            ev = await self.evaluate(svc.container)
            argv = self.service_command(svc, cfg)
            env, _ = await self._env(cfg)
            dep_release = await self._bind_into(cfg.bindings, network)
            health = dict(cfg.healthcheck) if cfg.healthcheck else None
            try:
                cid = await self._io(self._create, ev.image, argv, cfg, env, network=network,
                                     aliases=[alias], insecure=svc.insecure, healthcheck=health)
            except BaseException:
                await asyncio.shield(dep_release())
                raise
            running = _Running(cid, alias, {network: 1}, [dep_release])
            self._running[svc.id] = running
            try:
                await self._io(self._put, cid, ev.pending)
                await self._io(self.api.start, cid)
                running.ips[network] = await self._ip(cid, network)
                await self._healthy(running, cfg, network, argv)
            except BaseException:
                await asyncio.shield(self._stop(svc.id, argv))
                raise
            return running

    async def _bind_into(self, bindings: tuple[tuple[str, str], ...], network: str,
                         ) -> Callable[[], Awaitable[None]]:
        """A service's own bindings, on the network it is started on."""
        started: list[str] = []

        async def release() -> None:
            for sid in reversed(started):
                with contextlib.suppress(Exception):
                    await self._release(sid, network)

        try:
            for alias, sid in bindings:
                await self._start(self.store.get(sid, Service), network, alias)
                started.append(sid)
        except BaseException:
            await asyncio.shield(release())
            raise
        return release

    async def _ip(self, cid: str, network: str) -> str:
        attrs = await self._io(self.api.inspect_container, cid)
        return attrs["NetworkSettings"]["Networks"][network]["IPAddress"]

    async def _healthy(self, running: _Running, cfg: Config, network: str,
                       argv: list[str]) -> None:
        """Dagger's readiness: the image's Docker HEALTHCHECK when it has one (Dagger >= 0.21
        uses it instead of ports, dagger/dagger#11951), else every exposed port that does not
        skip the check accepts TCP connections."""
        deadline = time.monotonic() + HEALTH_WAIT_S
        ports = [p.port for p in cfg.ports if not p.skip_healthcheck and p.protocol == "TCP"]
        ip = running.ips[network]
        while True:
            attrs = await self._io(self.api.inspect_container, running.container)
            state = attrs["State"]
            if not state["Running"]:
                logs = await self._io(self._logs, running.container)
                raise EngineError(
                    f"service {running.alias} ({' '.join(argv)}) exited with code "
                    f"{state['ExitCode']} before it became healthy:\n{_tail(logs)}")
            if cfg.healthcheck is not None:
                status = (state.get("Health") or {}).get("Status")
                if status == "healthy":
                    return
                if status == "unhealthy":
                    probes = (state.get("Health") or {}).get("Log") or [{}]
                    last = str(probes[-1].get("Output", "")).strip()
                    raise EngineError(f"service {running.alias} is unhealthy: its HEALTHCHECK "
                                      f"failed {len(probes)} time(s), last: {_tail(last, 5)}")
            elif all(await asyncio.gather(*(self._io(_accepts, ip, p) for p in ports))):
                return
            if time.monotonic() > deadline:
                raise EngineError(f"service {running.alias} did not become healthy within "
                                  f"{HEALTH_WAIT_S:g} s")
            await asyncio.sleep(0.2)

    def _logs(self, cid: str) -> str:
        return self.api.logs(cid, stdout=True, stderr=True).decode("utf-8", "replace")

    async def _release(self, sid: str, network: str) -> None:
        running = self._running.get(sid)
        if running is None:
            return
        running.nets[network] -= 1
        if running.nets[network] > 0:
            return
        del running.nets[network]
        if running.nets:
            with contextlib.suppress(docker.errors.APIError):
                await self._io(self.api.disconnect_container_from_network, running.container,
                               network)
            return
        await self._stop(sid, None)

    async def _stop(self, sid: str, argv: list[str] | None) -> None:
        running = self._running.pop(sid, None)
        if running is None:
            return
        cid = running.container
        with contextlib.suppress(docker.errors.APIError):
            await self._io(self.api.stop, cid, timeout=STOP_GRACE_S)
        try:
            logs = await self._io(self._logs, cid)
            attrs = await self._io(self.api.inspect_container, cid)
            code = attrs["State"]["ExitCode"]
            command = argv or [*attrs["Config"]["Entrypoint"], *(attrs["Config"]["Cmd"] or [])]
        except docker.errors.APIError:
            logs, code, command = "", None, argv or []
        self.service_logs.append(ServiceLog(running.alias, command, logs, code))
        with contextlib.suppress(docker.errors.APIError):
            await self._io(self.api.remove_container, cid, force=True)
        for release in running.releases:
            await release()

    async def up(self, svc: Service, ports: list[tuple[int, int]], random: bool,
                 ) -> None:
        """``Service.up``: the service on 127.0.0.1 ports until the caller goes away."""
        network, release = await self._bind((("up", svc.id),))
        assert network is not None
        servers: list[asyncio.Server] = []
        try:
            running = self._running[svc.id]
            ip = running.ips[network]
            if not ports:
                cfg = await self.config(svc.container)  # type: ignore[arg-type]
                ports = [(p.port, p.port) for p in cfg.ports]
            for frontend, backend in ports:
                servers.append(await asyncio.start_server(
                    _forwarder(ip, backend), "127.0.0.1", 0 if random else frontend))
            while True:
                attrs = await self._io(self.api.inspect_container, running.container)
                if not attrs["State"]["Running"]:
                    raise EngineError(f"service exited with code {attrs['State']['ExitCode']}")
                await asyncio.sleep(0.5)
        finally:
            for server in servers:
                server.close()
            await asyncio.shield(release())

    # --- cleanup -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        for sid in list(self._running):
            await self._stop(sid, None)
        await self._io(self._cleanup_sync)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _cleanup_sync(self) -> None:
        for c in self.api.containers(all=True, filters={"label": f"{LABEL}={self.token}"}):
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_container(c["Id"], force=True)
        for n in self.api.networks(filters={"label": f"{LABEL}={self.token}"}):
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_network(n["Id"])
        for image in reversed(self._images):
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_image(image, force=True, noprune=False)
        self.client.close()


# --- helpers -----------------------------------------------------------------------------------


def registry_host(address: str) -> str:
    """The registry of an image address, as docker names it (``docker.io`` when none)."""
    first, sep, _ = address.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _select(root: Path, exclude: list[str], include: list[str]) -> set[str]:
    """Relative paths under ``root`` kept by Dagger's filters."""
    matcher = PatternMatcher(exclude)
    matcher.patterns.pop()  # docker-py adds "!.dockerignore" for builds; Dagger does not
    keep = set(matcher.walk(str(root))) if exclude else {
        str(p.relative_to(root)) for p in root.rglob("*")}
    if include:
        only = PatternMatcher(["*", *(f"!{p}" for p in include)])
        only.patterns.pop()
        keep &= set(only.walk(str(root)))
    for rel in list(keep):  # a kept file needs its parent directories
        for parent in PurePosixPath(rel).parents:
            if str(parent) != ".":
                keep.add(str(parent))
    return keep


def _export_dir(src: Path, out: Path, wipe: bool) -> str:
    if wipe and out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, symlinks=True, dirs_exist_ok=True)
    return str(out.resolve())


def _export_file(src: Path, out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, out)
    return str(out.resolve())


def _inside(base: Path, rel: str) -> Path:
    target = (base / rel.lstrip("/")).resolve()
    if target != base.resolve() and base.resolve() not in target.parents:
        raise EngineError(f"{rel} is outside the directory")
    return target


def _expand(text: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def _tar(writes: tuple[Write, ...]) -> bytes:
    buf = io.BytesIO()

    def root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for w in writes:
            dest = w.dest.lstrip("/")
            if w.data is not None:
                info = root_owned(tarfile.TarInfo(dest))
                info.size, info.mode, info.mtime = len(w.data), w.mode or 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(w.data))
            elif w.host is not None and w.host.is_dir():
                for path in sorted(w.host.rglob("*")):
                    rel = path.relative_to(w.host).as_posix()
                    tar.add(path, f"{dest}/{rel}", recursive=False, filter=root_owned)
            elif w.host is not None:
                info = root_owned(tar.gettarinfo(w.host, dest))
                if w.mode is not None:
                    info.mode = w.mode
                with w.host.open("rb") as f:
                    tar.addfile(info, f)
    return buf.getvalue()


_DOCKER_STEP = re.compile(r"The command '(.+)' returned a non-zero code: (\d+)", re.S)


def _build_error(message: str, log: str) -> EngineError:
    """A classic-builder failure in the words BuildKit (Dagger's builder) uses."""
    step = _DOCKER_STEP.search(message)
    if step is None:
        return EngineError(f"failed to solve: {message.strip()}")
    cmd, code = step.group(1), int(step.group(2))
    argv = ["/bin/sh", "-c", cmd.removeprefix("/bin/sh -c ")] if cmd.startswith("/bin/sh -c ") \
        else cmd.split()
    # the failing step's own output: after its last "Running in" line
    out = log.rsplit(" ---> Running in ", 1)[-1].split("\n", 1)[-1] if "Running in" in log else log
    return exec_error(argv, code, out, "")


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _tail(text: str, n: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _forwarder(host: str, port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                  Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return handle


_CAP_NAMES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]


def _caps_missing() -> list[str]:
    """Capabilities this machine cannot grant (not in our bounding set; the daemon runs beside
    us): asking Docker for them fails with "unable to apply caps"."""
    try:
        text = Path("/proc/self/status").read_text()
        bounding = int(re.search(r"CapBnd:\s*([0-9a-f]+)", text).group(1), 16)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return []
    return [name for i, name in enumerate(_CAP_NAMES) if not bounding >> i & 1]


def _writable_cgroup_mounts() -> list[str]:
    """The memory cgroup hierarchy to bind-mount writable (cgroup v1 here). On a v2 host the
    unified hierarchy would be it; the guard then falls back to its RSS watchdog."""
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists():
        return [str(v1)]
    return []
