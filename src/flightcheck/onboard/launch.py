"""How the container starts the service, and on which port and address it listens.

From the Dockerfile's command (``python -m app``, ``python app.py``, ``uvicorn mod:app --port
8000``, ``gunicorn -b 0.0.0.0:$PORT mod:app``, ``sh -c "exec … ${PORT:-8080}"``, ``fastapi run``,
``flask run``) and, when the command is Python, from the server call in the entry module
(``uvicorn.run(..., port=int(os.environ.get("PORT", "8080")))``, ``app.run(port=5000)``).
Cloud Run — and flightcheck — tell the service its port in ``$PORT``: a port that ignores it is
reported with the fix.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
from dataclasses import dataclass, field

from flightcheck.onboard.dockerfile import DockerFacts
from flightcheck.onboard.envreads import EnvRead, reads_in
from flightcheck.onboard.project import (
    Project,
    SourceFile,
    call_name,
    const_str,
    dotted,
    kwarg,
    last_name,
    string_value,
)

_ENV_REF = re.compile(r"^\$\{?(\w+)(?::?-([^}]*))?\}?$")
_SERVERS = {"uvicorn", "gunicorn", "hypercorn", "granian", "daphne", "waitress-serve", "fastapi", "flask"}
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Port:
    """Where a port number comes from."""

    literal: int | None = None  # hard-coded
    env: str | None = None  # read from this variable (PORT when it honours Cloud Run)
    default: int | None = None  # the value when the variable is unset
    where: str = ""

    @property
    def honours_port(self) -> bool:
        return self.env == "PORT"


@dataclass
class Launch:
    """How the service process starts."""

    kind: str = "unknown"  # python-module | python-script | <server name> | unknown
    argv: list[str] = field(default_factory=list)  # the command itself (sh -c unwrapped)
    module: str | None = None  # python -m X
    script: str | None = None  # python app.py (as written)
    target: str | None = None  # module:attr of the app object a server loads
    factory: bool = False
    port: Port = field(default_factory=Port)
    host: str | None = None  # literal bind address; None: from the environment or unknown
    host_env: bool = False  # the bind address comes from $HOST
    entry: SourceFile | None = None  # the entry module's file, when found
    where: str = ""  # file:line of what decided the port
    notes: list[str] = field(default_factory=list)


def _unwrap(argv: list[str]) -> list[str]:
    """``sh -c "a && exec b"`` → the last command's words; ``exec`` dropped."""
    words = list(argv)
    if len(words) >= 3 and os.path.basename(words[0]) in ("sh", "bash", "dash") and words[1] == "-c":
        try:
            words = shlex.split(words[2])
        except ValueError:
            words = words[2].split()
        segments: list[list[str]] = [[]]
        for w in words:
            if w in ("&&", ";", "||"):
                segments.append([])
            else:
                segments[-1].append(w)
        words = next((s for s in reversed(segments) if s), [])
    while words and words[0] in ("exec", "env") or (words and "=" in words[0] and not words[0].startswith("-")):
        words = words[1:]
    return words


def _is_python(word: str) -> bool:
    return bool(re.fullmatch(r"python(\d(\.\d+)?)?", os.path.basename(word)))


def _port_word(word: str, env: dict[str, str]) -> Port:
    m = _ENV_REF.match(word)
    if m:
        var, default = m.group(1), m.group(2)
        fallback = default if default else env.get(var)
        return Port(env=var, default=int(fallback) if fallback and fallback.isdigit() else None)
    if word.isdigit():
        return Port(literal=int(word))
    return Port()


def _option(words: list[str], *names: str) -> str | None:
    for i, w in enumerate(words):
        for n in names:
            if w == n and i + 1 < len(words):
                return words[i + 1]
            if n.startswith("--") and w.startswith(n + "="):
                return w.split("=", 1)[1]
            if not n.startswith("--") and w.startswith(n) and len(w) > len(n):
                return w[len(n):]
    return None


def _positionals(words: list[str], with_value: set[str]) -> list[str]:
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w.startswith("-"):
            skip = w in with_value
        else:
            out.append(w)
    return out


def from_command(argv: list[str], env: dict[str, str]) -> Launch:
    """Read a container command (``ENTRYPOINT`` + ``CMD``)."""
    words = _unwrap(argv)
    launch = Launch(argv=words)
    if not words:
        return launch
    head = os.path.basename(words[0])
    rest = words[1:]
    if _is_python(head):
        if "-m" in rest:
            i = rest.index("-m")
            mod = rest[i + 1] if i + 1 < len(rest) else ""
            if mod in _SERVERS:
                return _server(mod, rest[i + 2:], env, launch)
            launch.kind, launch.module = "python-module", mod
            return launch
        scripts = [w for w in rest if not w.startswith("-")]
        if scripts:
            launch.kind, launch.script = "python-script", scripts[0]
            if os.path.basename(scripts[0]) == "manage.py" and "runserver" in scripts:
                launch.kind = "django-runserver"
                addr = next((w for w in scripts[scripts.index("runserver") + 1:]), "127.0.0.1:8000")
                host, _, port = addr.rpartition(":")
                launch.port = _port_word(port or addr, env)
                launch.host = host or "127.0.0.1"
        return launch
    if head in _SERVERS:
        return _server(head, rest, env, launch)
    return launch


def _server(name: str, args: list[str], env: dict[str, str], launch: Launch) -> Launch:
    launch.kind = name
    if name == "uvicorn":
        pos = _positionals(args, {"--host", "--port", "--app-dir", "--workers", "--log-level",
                                  "--root-path", "--env-file", "--uds", "--fd", "--loop", "--http"})
        launch.target = pos[0] if pos else None
        launch.factory = "--factory" in args
        port = _option(args, "--port")
        # uvicorn reads UVICORN_PORT, never PORT: no --port means 8000.
        launch.port = _port_word(port, env) if port else Port(literal=8000)
        launch.host = _option(args, "--host") or "127.0.0.1"
    elif name in ("gunicorn", "hypercorn", "granian"):
        pos = _positionals(args, {"-b", "--bind", "-k", "--worker-class", "-w", "--workers",
                                  "-c", "--config", "--timeout", "-t", "--threads", "--interface",
                                  "--host", "--port", "--log-level"})
        launch.target = pos[-1] if pos else None
        bind = _option(args, "-b", "--bind")
        if bind:
            host, _, port = bind.rpartition(":")
            launch.host = host or "0.0.0.0"
            launch.port = _port_word(port, env)
        elif name == "gunicorn":
            # gunicorn binds 0.0.0.0:$PORT when PORT is set (and no bind is configured).
            launch.host = "0.0.0.0"
            launch.port = Port(env="PORT", default=int(env["PORT"]) if env.get("PORT", "").isdigit() else 8000)
            if _option(args, "-c", "--config"):
                launch.notes.append("gunicorn reads a config file: its bind setting was not read")
        else:
            port = _option(args, "--port")
            launch.port = _port_word(port, env) if port else Port(literal=8000)
            launch.host = _option(args, "--host")
        if launch.target and launch.target.endswith("()"):
            launch.target, launch.factory = launch.target[:-2], True
    elif name == "fastapi":
        pos = _positionals(args, {"--port", "--host", "--app", "--workers", "--root-path"})
        file = next((p for p in pos if p.endswith(".py")), None)
        if file:
            launch.script = file
        port = _option(args, "--port")
        launch.port = _port_word(port, env) if port else Port(literal=8000)
        launch.host = _option(args, "--host") or ("0.0.0.0" if "run" in pos else "127.0.0.1")
    elif name == "flask":
        port = _option(args, "--port", "-p")
        launch.port = _port_word(port, env) if port else Port(
            env="FLASK_RUN_PORT", default=5000) if "FLASK_RUN_PORT" in env else Port(literal=5000)
        launch.host = _option(args, "--host", "-h") or env.get("FLASK_RUN_HOST", "127.0.0.1")
        app = _option(args, "--app", "-A") or env.get("FLASK_APP")
        if app:
            launch.target = app if ":" in app else f"{app.removesuffix('.py')}:app"
    elif name == "daphne":
        pos = _positionals(args, {"-b", "--bind", "-p", "--port"})
        launch.target = pos[-1] if pos else None
        port = _option(args, "-p", "--port")
        launch.port = _port_word(port, env) if port else Port(literal=8000)
        launch.host = _option(args, "-b", "--bind") or "127.0.0.1"
    elif name == "waitress-serve":
        pos = _positionals(args, {"--port", "--host", "--listen"})
        launch.target = pos[-1] if pos else None
        port = _option(args, "--port")
        launch.port = _port_word(port, env) if port else Port(literal=8080)
        launch.host = _option(args, "--host") or "0.0.0.0"
    return launch


# --- the entry module's own server call ------------------------------------------------------

_RUN_CALLS = ("uvicorn.run", "run_simple", "serve", "web.run_app", "hypercorn.asyncio.serve")


def from_source(project: Project, launch: Launch, entry: SourceFile, reads: list[EnvRead]) -> None:
    """Fill port/host/target from the server call in ``entry`` (a ``python -m``/script entry)."""
    launch.entry = entry
    env_names = {r.name for r in reads}
    for node in entry.nodes:
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        is_uvicorn = name.endswith("uvicorn.run") or name == "run" and _imports_from(entry, "uvicorn", "run")
        is_app_run = last_name(node) == "run" and not is_uvicorn and isinstance(node.func, ast.Attribute) \
            and not dotted(node.func.value).endswith(("asyncio", "anyio", "trio", "subprocess")) \
            and _starts_server(entry, node)
        if not (is_uvicorn or is_app_run or name.endswith(_RUN_CALLS)):
            continue
        fn = _enclosing_function(entry, node)
        port_expr = kwarg(node, "port")
        host_expr = kwarg(node, "host")
        if is_uvicorn:
            app = node.args[0] if node.args else kwarg(node, "app")
            target = string_value(app, entry)
            if target and ":" in target:
                launch.target = target
            elif isinstance(app, ast.Name):
                launch.target = f"{_home(entry, app.id)}:{app.id}"
            elif isinstance(app, ast.Call):
                name = dotted(app.func).split(".")[-1]
                launch.target = f"{_home(entry, name)}:{name}"
                launch.factory = True
            launch.kind = launch.kind if launch.kind != "unknown" else "uvicorn"
            default_port, default_host = 8000, "127.0.0.1"
        elif is_app_run:
            receiver = dotted(node.func.value) if isinstance(node.func, ast.Attribute) else ""
            launch.target = launch.target or f"{entry.module}:{receiver}"
            if port_expr is None and len(node.args) >= 2:
                port_expr = node.args[1]
            if host_expr is None and node.args:
                host_expr = node.args[0]
            default_port, default_host = 5000, "127.0.0.1"
        else:
            default_port, default_host = 8080, "0.0.0.0"
        launch.where = entry.where(node)
        launch.port = _port_expr(port_expr, fn or entry.tree, entry, env_names, reads) if port_expr \
            else Port(literal=default_port, where=entry.where(node))
        launch.port.where = launch.port.where or entry.where(node)
        host = _host_expr(host_expr, fn or entry.tree, entry, env_names) if host_expr is not None else default_host
        if host == "$HOST":
            launch.host_env, launch.host = True, None
        else:
            launch.host = host
        return


def _home(file: SourceFile, name: str) -> str:
    """The module a name used in ``file`` comes from (``from mathcoach.app import create_app``)."""
    package = file.module if file.is_package else file.module.rpartition(".")[0]
    for node in file.nodes:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([base] if base else [])])
            return base
    return file.module


def _imports_from(file: SourceFile, module: str, name: str) -> bool:
    return any(isinstance(n, ast.ImportFrom) and n.module == module and any(a.name == name for a in n.names)
               for n in file.nodes)


def _starts_server(file: SourceFile, call: ast.Call) -> bool:
    """``app.run(...)`` under ``if __name__ == "__main__"`` or in a main()/serve() function —
    not ``agent.run(query)`` in a request handler."""
    for node in file.nodes:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) or (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in ("main", "run", "serve", "cli")):
            if any(n is call for n in ast.walk(node)):
                return True
    return False


def _enclosing_function(file: SourceFile, target: ast.AST) -> ast.AST | None:
    for node in file.nodes:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if any(n is target for n in ast.walk(node)):
                return node
    return None


def _assigned(scope: ast.AST, name: str) -> ast.expr | None:
    value = None
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            value = node.value
    return value


def _port_expr(expr: ast.expr, scope: ast.AST, file: SourceFile, env_names: set[str],
               reads: list[EnvRead]) -> Port:
    if isinstance(expr, ast.Name):
        value = _assigned(scope, expr.id) or _assigned(file.tree, expr.id)
        if value is not None:
            return _port_expr(value, scope, file, env_names, reads)
    if isinstance(expr, ast.Constant) and isinstance(expr.value, int):
        return Port(literal=expr.value, where=file.where(expr))
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str) and expr.value.isdigit():
        return Port(literal=int(expr.value), where=file.where(expr))
    here = [r for r in reads_in(file, list(ast.walk(expr)))]
    port_reads = [r for r in here if "PORT" in r.name]
    if isinstance(expr, ast.Attribute) and not port_reads:
        # settings.port: a field whose environment variable the project reads elsewhere
        name = expr.attr.upper()
        port_reads = [r for r in reads if r.name == name or r.name.endswith("_" + name)]
    if port_reads:
        r = port_reads[0]
        default = int(r.default) if r.default and r.default.isdigit() else None
        return Port(env=r.name, default=default, where=r.where)
    return Port(where=file.where(expr))


def _host_expr(expr: ast.expr, scope: ast.AST, file: SourceFile, env_names: set[str]) -> str | None:
    if isinstance(expr, ast.Name):
        value = _assigned(scope, expr.id) or _assigned(file.tree, expr.id)
        if value is not None:
            return _host_expr(value, scope, file, env_names)
    literal = const_str(expr)
    if literal is not None:
        return literal
    if any(r.name == "HOST" for r in reads_in(file, list(ast.walk(expr)))):
        return "$HOST"
    if isinstance(expr, ast.Attribute) and expr.attr.upper() == "HOST" and "HOST" in env_names:
        return "$HOST"
    return None


def binds_locally(launch: Launch) -> bool:
    """True when the service listens on loopback only: unreachable from outside its container."""
    return launch.host in _LOCAL_HOSTS


def listen_port(launch: Launch, facts: DockerFacts | None) -> int:
    """The port the container listens on when flightcheck sets ``PORT`` to it."""
    if launch.port.literal is not None:
        return launch.port.literal
    if launch.port.env and launch.port.env != "PORT" and facts and facts.env.get(launch.port.env, "").isdigit():
        return int(facts.env[launch.port.env])
    if facts and facts.env.get("PORT", "").isdigit():
        return int(facts.env["PORT"])
    if launch.port.default:
        return launch.port.default
    if facts and facts.expose:
        return facts.expose[0]
    return 8080
