"""From what the detectors found to flightcheck.toml and smoke.yaml, with every decision
explained: ``found`` says what init saw and chose, ``undecided`` what it could not choose and
how to settle it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flightcheck.fakemodel.server import FAKE_API_KEY
from flightcheck.onboard import dockerfile as dockerfile_mod
from flightcheck.onboard import envreads, launch, providers, routes, smokegen
from flightcheck.onboard import project as project_mod
from flightcheck.onboard.envreads import EnvRead
from flightcheck.onboard.launch import Launch
from flightcheck.onboard.project import Project, SourceFile
from flightcheck.onboard.routes import App, Route, Web
from flightcheck.onboard.writer import SUITE_NAME, Table, render_toml, render_yaml
from flightcheck.secrets import is_secret_name

FIXED_FAKE_PORT = 8929  # when the service's own variable must carry the fake model's URL

_STARTUP = re.compile(r"^/(?:health/|healthz/)?(?:ready|readyz|readiness|startup|started|warmup)/?$")
_LIVE = re.compile(r"^/(?:api/|v\d/)?(?:health|healthz|livez|live|liveness|ping|_health|healthcheck|"
                   r"heartbeat|health/live|status)/?$")
_AI_HEALTH = re.compile(r"^/(?:health|healthz)/(?:ai|llm|model|models|provider|deep)/?$|^/(?:ai|llm)/health/?$")
_FALLBACK = ("/", "/stats", "/status", "/version", "/info", "/about")
# What the fake-model run gives the service by itself.
_PROVIDED = {"PORT", "HOST", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "GEMINI_API_KEY",
             "GOOGLE_GEMINI_BASE_URL", "PYTHONUNBUFFERED"}
_AI_PARAMS = {"AI_MODEL": "model", "AI_TEMPERATURE": "temperature", "MAX_OUTPUT_TOKENS": "max_output_tokens",
              "AI_TOP_K": "top_k", "AI_TOP_P": "top_p"}
_MODEL_ID = re.compile(r"^(?:gpt-[\w.-]+|o\d[\w.-]*|gemini-[\w.-]+|claude-[\w.-]+|fake-[\w.-]+)$")


@dataclass
class Note:
    """Something init could not decide, and how to settle it."""

    what: str
    fix: str = ""


@dataclass
class Plan:
    root: Path
    found: list[tuple[str, str]] = field(default_factory=list)
    undecided: list[Note] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    suite: dict[str, Any] = field(default_factory=dict)
    toml_text: str = ""
    suite_text: str = ""

    def say(self, topic: str, text: str) -> None:
        self.found.append((topic, text))

    def note(self, what: str, fix: str = "") -> None:
        self.undecided.append(Note(what, fix))


def _service_name(root: Path, apps: list[App]) -> str:
    candidates = [a.title for a in apps if a.title] + [root.resolve().name]
    for raw in candidates:
        name = re.sub(r"[^a-z0-9-]+", "-", (raw or "").lower()).strip("-")
        name = re.sub(r"-{2,}", "-", name)
        if name and not name[0].isalpha():
            name = "svc-" + name
        name = name[:63].rstrip("-")
        if name:
            return name
    return "service"


def find_dockerfile(root: Path) -> str | None:
    for name in ("Dockerfile", "Containerfile", "dockerfile"):
        if (root / name).is_file():
            return name
    others = sorted(p.name for p in root.glob("*.Dockerfile")) + sorted(p.name for p in root.glob("Dockerfile.*"))
    return others[0] if others else None


def _script_file(project: Project, script: str, facts: dockerfile_mod.DockerFacts | None) -> SourceFile | None:
    rel = script.lstrip("./")
    hit = project.file(rel)
    if hit is None and facts is not None:  # COPY src/ /app/ then python /app/main.py
        image_path = script if script.startswith("/") else f"{facts.workdir.rstrip('/')}/{script}"
        for src, dest in facts.copies:
            dest = dest.rstrip("/")
            if image_path.startswith(dest + "/"):
                candidate = (src.rstrip("/") + "/" + image_path[len(dest) + 1:]).lstrip("./")
                hit = project.file(candidate) or hit
    if hit is None:
        base = Path(script).name
        matches = sorted((f for f in project.files if Path(f.rel).name == base), key=lambda f: f.rel.count("/"))
        hit = matches[0] if matches else None
    return hit


def _entry(project: Project, lnch: Launch, facts: dockerfile_mod.DockerFacts | None) -> SourceFile | None:
    if lnch.module:
        return project.module(lnch.module + ".__main__") or project.module(lnch.module)
    if lnch.script:
        return _script_file(project, lnch.script, facts)
    if lnch.target:
        return project.module(lnch.target.split(":")[0])
    return None


def inspect(root: Path) -> Plan:
    """Read the service in ``root`` (nothing is executed) and decide the config and suite."""
    root = root.resolve()
    plan = Plan(root=root)
    project = project_mod.load(root)
    if not project.files:
        plan.note(f"no Python source found under {root}", "run init in the service's directory")
    if project.unparsable:
        plan.note(f"not read (syntax errors, or not UTF-8): {', '.join(project.unparsable[:5])}"
                  + (" …" if len(project.unparsable) > 5 else ""),
                  "`flightcheck lint` shows where; rerun init once they parse")
    dockerfile_name = find_dockerfile(root)
    facts = dockerfile_mod.read(root, dockerfile_name) if dockerfile_name else None
    lnch = launch.from_command(facts.argv, facts.env) if facts else Launch()
    entry = _entry(project, lnch, facts)
    if entry is not None and lnch.kind in ("python-module", "python-script"):
        launch.from_source(project, lnch, entry, envreads.all_reads(project, project.closure([entry])))

    # Which files are the service: what the entry and the app module import.
    app_file = project.module(lnch.target.split(":")[0]) if lnch.target else None
    starts = [f for f in (entry, app_file) if f is not None]
    files = project.closure(starts) if starts else list(project.files)
    web = routes.detect(project, files)
    if not starts and web.apps:  # no Dockerfile command: the file that makes the app
        files = project.closure([web.apps[0].file])
        web = routes.detect(project, files)
    app = _app(web, lnch, app_file)
    if app is not None and app_file is None:
        app_file = app.file
    reads = envreads.all_reads(project, files)
    prov = providers.detect(project, files, reads)

    _dockerfile(plan, facts, dockerfile_name, lnch)
    service = Table("service")
    service.add("name", _service_name(root, web.apps))
    service.add("source", ".", "build context, relative to this file")
    service.add("dockerfile", dockerfile_name or "Dockerfile")
    service.add("port", *_port(plan, facts, lnch))
    command, pythonpath = _process_command(plan, lnch, app, entry, app_file)
    if command:
        service.add("command", command, "--runtime process only: how to start it on the host")
        service.add("pythonpath", pythonpath)
    service.add("import_check", _import_check(plan, project, lnch, entry, app_file),
                "imported inside the built image")
    env_table = _placeholders(plan, reads, app_file, project)
    _framework(plan, web, app)
    health, ai_path = _probes(plan, web, app, prov)
    fake_env, fixed_port = _provider(plan, prov)
    environments = _environments(plan, reads, files, prov)

    run = Table("run")
    run.add("memory_limit", "1Gi", "a first guess: the report shows the measured peak, size from it")
    smoke = Table("smoke")
    smoke.add("suite", SUITE_NAME)
    if fixed_port:
        smoke.add("fake_model_port", FIXED_FAKE_PORT, f"fixed: {fixed_port} carries its URL (smoke.yaml env.fake)")
    plan.tables = [service, env_table, run, health[0], health[1], health[2], smoke, *environments]
    plan.suite = _suite(plan, project, web, prov, fake_env, ai_path, health[1])
    plan.toml_text = render_toml(_toml_header(), plan.tables)
    plan.suite_text = render_yaml(_suite_header(), plan.suite)
    return plan


def _app(web: Web, lnch: Launch, app_file: SourceFile | None) -> App | None:
    if lnch.target:
        module, _, var = lnch.target.partition(":")
        for a in web.apps:
            if a.file.module == module and (a.var == var or var.startswith(a.var)):
                return a
    apps = [a for a in web.apps if app_file is None or a.file is app_file] or web.apps
    return apps[0] if apps else None


# --- Dockerfile and port ----------------------------------------------------------------------


def _dockerfile(plan: Plan, facts: dockerfile_mod.DockerFacts | None, name: str | None, lnch: Launch) -> None:
    if facts is None:
        plan.note("no Dockerfile: the build stage (docker runtime) has nothing to build",
                  "write one (docs/another-service.md §2), or run with --runtime process")
        return
    py = f" (Python {facts.python})" if facts.python else ""
    plan.say("dockerfile", f"{name}: final stage FROM {facts.base_image}{py}; EXPOSE "
             f"{', '.join(map(str, facts.expose)) or 'none'}; user {facts.user or 'root'}; "
             f"HEALTHCHECK {'yes' if facts.healthcheck else 'no'}")
    if facts.argv:
        plan.say("command", f"{' '.join(facts.argv)} ({facts.where(facts.cmd_line)})")
    else:
        plan.note("the Dockerfile has no CMD or ENTRYPOINT: the container does not start the service",
                  'add one, e.g. CMD ["python", "-m", "app"]')
    plan.say("dependencies", "; ".join(facts.installs) if facts.installs else "no pip/uv install step found")
    if not (plan.root / ".dockerignore").is_file():
        plan.note("no .dockerignore: flightcheck-report/, .flightcheck/, .venv and .git become part of "
                  "the build context (a new image tag after every run, secrets in the image)",
                  "add a .dockerignore listing flightcheck-report, .flightcheck, .venv, .git, "
                  "__pycache__")
    if lnch.kind == "unknown" and facts.argv:
        plan.note(f"init does not know the command {' '.join(lnch.argv or facts.argv)!r}: port and app "
                  "were taken from the source", "check [service].port")


def _port(plan: Plan, facts: dockerfile_mod.DockerFacts | None, lnch: Launch) -> tuple[int, str]:
    port = launch.listen_port(lnch, facts)
    where = lnch.port.where or (facts.where(facts.cmd_line) if facts else "")
    if lnch.port.honours_port:
        plan.say("port", f"{port}: the service listens on $PORT ({where})")
        comment = "the service reads $PORT"
    elif lnch.port.literal is not None:
        plan.say("port", f"{port}: hard-coded at {where}; the service ignores $PORT")
        plan.note(f"the port {port} is hard-coded ({where}): [service].port is set to it, so Cloud Run's "
                  f"$PORT matches only while the container port stays {port}; a service that reads "
                  "$PORT cannot drift from it", _port_fix(lnch, port))
        comment = f"hard-coded in the service ({where}): it ignores $PORT"
    elif lnch.port.env:
        plan.say("port", f"{port}: from ${lnch.port.env}, not $PORT ({where})")
        plan.note(f"the port comes from ${lnch.port.env}, not $PORT ({where})",
                  f"read PORT (Cloud Run sets it): int(os.environ.get(\"PORT\", \"{port}\"))")
        comment = f"${lnch.port.env} ({where})"
    else:
        plan.say("port", f"{port}: not visible in the command or the source (the default)")
        plan.note("which port the service listens on is not visible", "check [service].port")
        comment = "not visible in the source: check it"
    if facts and facts.expose and port not in facts.expose:
        plan.note(f"the Dockerfile EXPOSEs {', '.join(map(str, facts.expose))} but the service listens on {port}",
                  f"EXPOSE {port}")
    if launch.binds_locally(lnch):
        plan.note(f"the service binds {lnch.host} ({lnch.where or where}): nothing outside its container "
                  "can reach it, so run-with-memory-limit and health-poll fail",
                  'bind 0.0.0.0 (or read $HOST): host="0.0.0.0"')
    return port, comment


def _port_fix(lnch: Launch, port: int) -> str:
    if lnch.kind in ("uvicorn", "gunicorn", "hypercorn", "fastapi", "flask", "daphne", "granian"):
        words = [w for w in lnch.argv]
        shown = " ".join(words)
        fixed = re.sub(rf"(--port[ =]|-b [^ ]*:|--bind[ =][^ ]*:|-p ){port}\b",
                       lambda m: m.group(1) + "${PORT:-" + str(port) + "}", shown)
        if fixed == shown:
            fixed = shown + " --port ${PORT:-" + str(port) + "}"
        return f'read $PORT in the command: CMD ["sh", "-c", "exec {fixed}"]'
    return f'read $PORT in the code: port=int(os.environ.get("PORT", "{port}"))'


# --- process runtime and import check ---------------------------------------------------------


def _process_command(plan: Plan, lnch: Launch, app: App | None, entry: SourceFile | None,
                     app_file: SourceFile | None) -> tuple[list[str], list[str]]:
    honours = lnch.port.honours_port and lnch.host_env
    if honours and lnch.module and entry is not None:
        return ["python", "-m", lnch.module], [entry.root]
    if honours and lnch.script and entry is not None:
        return ["python", entry.rel], ["."]
    if app is not None and app_file is not None:
        target = f"{app_file.module}:{app.var}"
        if app.asgi:
            factory = ", factory=True" if app.factory else ""
            code = (f'import os, uvicorn; uvicorn.run("{target}", host=os.environ["HOST"], '
                    f'port=int(os.environ["PORT"]){factory})')
            return ["python", "-c", code], [app_file.root]
        if app.framework in ("flask", "wsgi"):
            obj = f"{app.var}()" if app.factory else app.var
            code = (f"import os; from werkzeug.serving import run_simple; from {app_file.module} import "
                    f'{app.var}; run_simple(os.environ["HOST"], int(os.environ["PORT"]), {obj}, threaded=True)')
            return ["python", "-c", code], [app_file.root]
    plan.note("how to start the service on the host (--runtime process) is not visible",
              'set [service].command, e.g. ["python", "-m", "app"]; the docker runtime does not need it')
    return [], []


def _import_check(plan: Plan, project: Project, lnch: Launch, entry: SourceFile | None,
                  app_file: SourceFile | None) -> list[str]:
    """The entry package and the module that makes the app. The build stage imports them with
    the environment the service gets (placeholders and the fake model's key included)."""
    modules: list[str] = []
    if lnch.module and entry is not None and project.module(lnch.module) is not None:
        modules.append(lnch.module)
    if app_file is not None and app_file.module not in modules:
        modules.append(app_file.module)
    if not modules and entry is not None:
        modules.append(entry.module)
    return modules


def _placeholders(plan: Plan, reads: list[EnvRead], app_file: SourceFile | None, project: Project) -> Table:
    """Variables the service cannot start (or answer) without: placeholder values for the
    fake-model run, each marked."""
    table = Table("service.env", comment="init: placeholders so the service starts for the fake-model run; pass real\n"
                  "values with --service-env NAME=… (a credential: --service-env-file)")
    needs = envreads.at_import(project, app_file) if app_file else envreads.ImportNeeds([], [])
    import_reads = needs.reads
    at_import = {r.name for r in import_reads}
    seen: set[str] = set()
    optional: list[str] = []
    for r in sorted(reads, key=lambda r: r.name):
        if r.name in seen or r.name in _PROVIDED or r.name in _AI_PARAMS:
            continue
        if not r.required:
            if not r.has_default and r.name in at_import and r.name not in optional:
                optional.append(r.name)
            continue
        seen.add(r.name)
        when = "at import" if r.name in at_import else "when used"
        value = FAKE_API_KEY if is_secret_name(r.name) else {"int": "1", "float": "1.0", "bool": "false",
                                                             "url": "http://127.0.0.1:9"}.get(r.kind, "placeholder")
        table.add(r.name, value, f"init: placeholder — read {when} with no default ({r.where})")
    for ctor, where in needs.clients:  # Anthropic() at import raises without its key
        var = envreads.KEYED_CLIENTS[ctor]
        if var not in _PROVIDED and var not in seen:
            seen.add(var)
            table.add(var, FAKE_API_KEY, f"init: placeholder — {ctor}() at import needs it ({where})")
    provided = sorted({r.name for r in import_reads if r.required and r.name in _PROVIDED}
                      | {envreads.KEYED_CLIENTS[c] for c, _ in needs.clients} & _PROVIDED)
    if provided:
        plan.say("env at import", f"{', '.join(provided)}: required at import; the fake-model run provides it")
    if table.entries:
        plan.say("env", "needed with no default: " + ", ".join(f"{e.key} ({e.comment.rsplit('(', 1)[1]}"
                                                              for e in table.entries) + " → placeholders in [service.env]")
    elif not provided:
        plan.say("env", "no variable is needed without a default")
    if optional:
        plan.note(f"read at import with no default, used as None when unset: {', '.join(optional)}",
                  "set them in [service.env] if the service needs them")
    return table


# --- framework, probes ----------------------------------------------------------------------


def _framework(plan: Plan, web: Web, app: App | None) -> None:
    if app is not None:
        title = f" {app.title!r}" if app.title else ""
        kind = {"fastapi": "FastAPI", "flask": "Flask", "starlette": "Starlette", "asgi": "plain ASGI",
                "wsgi": "plain WSGI"}.get(app.framework, app.framework)
        factory = " (factory)" if app.factory else ""
        plan.say("framework", f"{kind} app{title}: {app.target}{factory} ({app.where})")
    elif web.frameworks:
        plan.say("framework", f"{', '.join(web.frameworks)} imported, no app object found")
    else:
        plan.note("no web framework or app object found", "check that init runs in the service's directory")
    if web.routes:
        plan.say("routes", ", ".join(str(r) for r in web.routes))
    else:
        plan.note("no routes found in the source", "write the probe paths and smoke cases by hand")


def _health_snippet(app: App | None) -> str:
    var = app.var if app and not app.factory else "app"
    if app is None or app.framework in ("fastapi", "flask", "quart"):
        return f'\n      @{var}.get("/healthz")\n      def healthz(): return {{"status": "ok"}}'
    if app.framework == "starlette":
        return 'Route("/healthz", lambda request: JSONResponse({"status": "ok"})) in the routes list'
    return 'answer GET /healthz with 200 {"status": "ok"}'


def _probes(plan: Plan, web: Web, app: App | None, prov: providers.Providers) -> tuple[tuple[Table, Table, Table], str]:
    gets = [r for r in web.routes if r.method == "GET" and not r.path_params]
    quiet = [r for r in gets if not prov.reaches_model(r.handler)]
    startup = next((r for r in quiet if _STARTUP.match(r.path)), None)
    live = next((r for r in quiet if _LIVE.match(r.path)), None)
    ai = next((r for r in gets if _AI_HEALTH.match(r.path) and prov.reaches_model(r.handler)), None)
    fallback: Route | None = None
    if startup is None and live is None:
        fallback = next((r for p in _FALLBACK for r in quiet if r.path == p), None)
        snippet = _health_snippet(app)
        if fallback is not None:
            plan.note(f"no health route: the probes use GET {fallback.path}, which answers without the model",
                      f"add a health route: {snippet}")
        else:
            plan.note("no route answers health probes: health-poll fails until one exists",
                      f"add a health route: {snippet}")
    live_route, startup_route = live or startup or fallback, startup or live or fallback
    live_path = live_route.path if live_route else "/healthz"
    startup_path = startup_route.path if startup_route else "/healthz"
    plan.say("probes", f"startup {startup_path}, liveness {live_path}"
             + ("" if startup else " (no separate readiness route)" if live else ""))
    health = Table("health")
    if ai is not None:
        chain = prov.ai.get(id(ai.handler.node)) if ai.handler else None
        health.add("ai_path", ai.path, f"reaches the model ({chain[-1].rsplit(' at ', 1)[-1]})" if chain else "")
        plan.say("ai health", f"GET {ai.path} reaches the model: ai-smoke checks it first")
    else:
        health.add("ai_path", "", "no AI health route: the smoke suite covers the AI path")
    start = Table("health.startup", comment="Cloud Run startupProbe: the window is period_s × failure_threshold = 60 s")
    start.add("path", startup_path)
    start.add("initial_delay_s", 0)
    start.add("period_s", 1)
    start.add("timeout_s", 1)
    start.add("failure_threshold", 60)
    liveness = Table("health.liveness", comment="Cloud Run livenessProbe")
    liveness.add("path", live_path)
    liveness.add("period_s", 10)
    liveness.add("timeout_s", 1)
    liveness.add("failure_threshold", 3)
    return (health, start, liveness), ai.path if ai else ""


# --- provider -------------------------------------------------------------------------------


def _provider(plan: Plan, prov: providers.Providers) -> tuple[dict[str, str], str | None]:
    """The env the fake-model run needs beyond flightcheck's standard variables, and the
    variable that forces a fixed fake-model port (if any)."""
    fake_env: dict[str, str] = {}
    fixed: str | None = None
    if not prov.uses and not prov.calls:
        plan.note("no model provider call found (openai, anthropic, google-genai, langchain, litellm, or "
                  "HTTP to a provider URL)", "write the AI cases of smoke.yaml by hand (docs/smoke.md)")
        return fake_env, fixed
    if prov.sdks:
        plan.say("provider sdk", ", ".join(prov.sdks))
    seen: set[tuple[str, str | None, str | None]] = set()
    for use in prov.uses:
        key = (use.api, use.base.var, use.base.url)
        if key in seen:
            continue
        seen.add(key)
        verdict = _reach(plan, use)
        plan.say("provider", f"{use.sdk} {use.what} at {use.where}: {use.base.describe()} — {verdict}")
        if use.fake_reachable and use.base.source == "env" and use.base.var not in providers.STANDARD_BASE_VARS.get(use.api, ()):
            suffix = re.sub(r"^https?://[^/]+", "", use.base.default or "")
            fake_env[use.base.var or ""] = f"http://127.0.0.1:{FIXED_FAKE_PORT}{suffix.rstrip('/')}"
            fixed = use.base.var
        if use.key_var and use.key_var not in providers.STANDARD_KEY_VARS:
            fake_env.setdefault(use.key_var, FAKE_API_KEY)
    if prov.switch is not None:
        sw = prov.switch
        wanted = next((v for v in ("openai", "gemini") if v in sw.values), None)
        if wanted and (sw.default or "").lower() != wanted:
            fake_env[sw.var] = wanted
            plan.say("provider switch", f"${sw.var} picks the provider ({', '.join(sw.values)}; default "
                     f"{sw.default or 'none'}, {sw.where}): the fake-model run sets {sw.var}={wanted}")
    return fake_env, fixed


def _reach(plan: Plan, use: providers.ProviderUse) -> str:
    if use.fake_reachable:
        return "the fake model server can stand in for it"
    if use.api not in providers.FAKE_APIS:
        plan.note(f"{use.sdk} at {use.where} speaks the {use.api} API, which flightcheck's fake model "
                  "server does not: cases that reach it fail in fake mode",
                  "run ai-smoke against the real provider (--real-model, key via --service-env), or call an "
                  "OpenAI-compatible endpoint")
        return "the fake model server cannot answer this API"
    if use.base.source == "hard-coded":
        plan.note(f"{use.sdk} at {use.where} hard-codes its base URL {use.base.url}: the fake model "
                  "server cannot be put in its place, so the smoke suite would call the real provider",
                  "read it from the environment: base_url=os.environ.get(\"OPENAI_BASE_URL\", "
                  f"\"{use.base.url}\")")
        return "hard-coded, the fake model server cannot reach it"
    plan.note(f"{use.sdk} at {use.where}: where its base URL comes from is not visible",
              "make sure it reads OPENAI_BASE_URL (or GOOGLE_GEMINI_BASE_URL)")
    return "init cannot tell whether the fake model server can reach it"


def _environments(plan: Plan, reads: list[EnvRead], files: list[SourceFile],
                  prov: providers.Providers) -> list[Table]:
    by_name = {r.name: r for r in reads if r.name in _AI_PARAMS}
    if "AI_MODEL" not in by_name:
        plan.note("the service does not read AI_MODEL: [environments] (the parity surface) left out",
                  "read the model and its parameters from AI_MODEL, AI_TEMPERATURE, MAX_OUTPUT_TOKENS")
        return []
    model = by_name["AI_MODEL"].default
    if not model or not _MODEL_ID.match(model):
        apis = {u.api for u in prov.uses} | {c.api for c in prov.calls}
        literals = _model_literals(files)
        prefer = ("gpt-", "o1", "o3", "o4") if "openai" in apis else ("gemini-",) if "gemini" in apis else ()
        model = next((m for m in literals if m.startswith(prefer)), None) if prefer else None
        model = model or (literals[0] if literals else None)
    if not model:
        plan.note("AI_MODEL has no visible default: [environments] left out", "add [environments.dev] model = …")
        return []
    params: dict[str, Any] = {"model": model}
    for var, key in _AI_PARAMS.items():
        r = by_name.get(var)
        if var == "AI_MODEL" or r is None or r.default is None:
            continue
        try:
            params[key] = int(r.default) if key in ("top_k", "max_output_tokens") else float(r.default)
        except ValueError:
            continue
    plan.say("ai parameters", ", ".join(f"{k}={v}" for k, v in params.items())
             + " (the service's defaults) → [environments.dev] and [environments.prod]")
    tables = []
    for env in ("dev", "prod"):
        t = Table(f"environments.{env}", comment="passed to the service as AI_MODEL, AI_TEMPERATURE, …" if env == "dev" else "")
        for k, v in params.items():
            t.add(k, v)
        tables.append(t)
    return tables


def _model_literals(files: list[SourceFile]) -> list[str]:
    import ast

    out: list[str] = []
    for f in files:
        for node in f.nodes:
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODEL_ID.match(node.value):
                if node.value not in out:
                    out.append(node.value)
    return out


# --- the suite --------------------------------------------------------------------------------


def _suite(plan: Plan, project: Project, web: Web, prov: providers.Providers, fake_env: dict[str, str],
           ai_path: str, liveness: Table) -> dict[str, Any]:
    models = routes.pydantic_models(project)
    enums = routes.enums(project)
    cases: list[dict[str, Any]] = []
    ai_routes = [r for r in web.routes if prov.reaches_model(r.handler) and r.path != ai_path]
    for route in web.routes:
        if route in ai_routes:
            continue
        if route.method in ("POST", "PUT", "PATCH"):
            plan.say("no model", f"{route} does not reach the model: no case")
    for route in ai_routes:
        if route.method == "GET" and route.path_params:
            continue
        plan.say("model call", f"{route} reaches the model via {prov.reaches_model(route.handler)}")
        rc = smokegen.cases_for(project, route, prov, models, enums)
        cases.extend(rc.cases)
        for n in rc.notes:
            plan.note(n)
        if rc.cases:
            checks = [c for c in rc.cases if c.get("model")]
            plan.say("smoke", f"{len(rc.cases)} case(s) for {route}"
                     + (f"; the reply is checked at '{rc.reply_field}'" if rc.reply_field else "")
                     + (" (scripted replies)" if checks else ""))
    if not cases:
        path = next((e.value for e in liveness.entries if e.key == "path"), "/healthz")
        cases.append({"name": f"GET {path} answers", "request": {"method": "GET", "path": path},
                      "expect": {"status": 200}})
        plan.note("no route that reaches the model was found: smoke.yaml only checks that the service answers",
                  "write the AI cases by hand (docs/smoke.md); a smoke suite that never reaches the model proves little")
    plan.note("no latency, token or cost budgets were written",
              "add expect.latency_ms / tokens / cost_usd once the first report shows the measured values")
    suite: dict[str, Any] = {"version": 1, "defaults": {"timeout_s": 20}}
    if fake_env:
        suite["env"] = {"fake": fake_env}
        if prov.switch is not None:
            for value in ("openai", "gemini"):
                if value in prov.switch.values:
                    suite["env"][value] = {prov.switch.var: value}
    suite["cases"] = cases
    return suite


def _toml_header() -> list[str]:
    return [
        "flightcheck configuration written by `flightcheck init` from a static reading of this",
        "directory (nothing of the service was executed). Lines marked `init:` are placeholders",
        "or guesses to review. `flightcheck config --explain` shows every effective value and",
        "where it came from; the README's Configuration table lists every key.",
    ]


def _suite_header() -> list[str]:
    return [
        "ai-smoke suite written by `flightcheck init` (format: docs/smoke.md in flightcheck).",
        "Scripted cases (`model:`) run against flightcheck's fake model server: no key, no cost.",
        "With --real-model (or [smoke].model = \"real\") they are skipped and the unscripted ones hit the real API.",
    ]
