"""An execution harness for the Dagger module: a stand-in for the Dagger engine, for tests only.

No Dagger engine or CLI can be obtained where flightcheck is developed, and a module that was
only type-checked and registered has never *run*. This package stands where the engine would
and runs the module's functions for real:

- **The API**: a GraphQL server on 127.0.0.1 built with graphql-core from the engine's own
  schema (``../shared/dagger/schema-0.21.graphqls``), with resolvers for the subset the module and
  the Python SDK use (``api.py``). Every request is validated against that schema first, so a
  query the engine would reject is rejected here; a field outside the subset answers "not
  modelled by the harness", never a made-up value.
- **The module runtime**: the Python SDK's own entry point (``dagger.mod.cli.app``) in a
  subprocess, pointed at the server through the variables the SDK reads
  (``DAGGER_SESSION_PORT``, ``DAGGER_SESSION_TOKEN``, ``DAGGER_MAIN_OBJECT``), found through the
  entry point in ``ci/pyproject.toml``. Registration (``parentName`` empty → typedefs) and every
  call (``currentFunctionCall``: parent state, inputs as JSON with object IDs, ``returnValue`` /
  ``returnError``) go through the SDK's connection, ID handling and decoding (``module.py``).
- **The CLI's side**: ``Harness.call("ci", memory="512Mi", select='{ export(path: "...") }')`` sends
  the query ``dagger call ci --memory=512Mi export --path=...`` would: the module's object is in
  the schema (``Query.flightcheck``, ``Flightcheck.runWithMemoryLimit`` ...), ``DefaultPath``
  arguments are loaded from the module's directory with their ``Ignore`` patterns, secrets come
  from ``env://NAME`` (``Harness.secret_from_env``).
- **Execution on the real Docker daemon** (docker SDK, ``engine.py``): ``from`` (local images
  only; ``image_map`` maps an address to a local image — nothing is ever pulled), file-system
  changes (``withDirectory``/``withFile``/``withNewFile``) written into the next container,
  ``withExec`` (a container per exec, committed as the next state; exit codes, stdout/stderr,
  ``expect``, failures as ``EXEC_ERROR`` so the SDK raises ``dagger.ExecError``), environment,
  secrets as environment variables (values scrubbed from exec output as the engine does, and
  every unscrubbed sighting recorded in ``Engine.secret_leaks``), cache volumes (named Docker
  volumes that persist, as Dagger's do), ``Directory.dockerBuild`` (Docker's classic builder;
  a failing ``RUN`` is reported in BuildKit's words, ``process "..." did not complete
  successfully``), ``asService`` + ``withServiceBinding`` (a user-defined network per dependent;
  services start before their dependents, one instance per service shared by all of them, and
  are stopped when the last dependent is done), Dagger's readiness (the image's Docker
  HEALTHCHECK when it has one — dagger/dagger#11951 — else TCP connects to every exposed port
  that does not skip the check), ``insecureRootCapabilities`` (see below), ``export`` of
  directories and files, ``Service.up`` (127.0.0.1 ports forwarded until the client goes away),
  ``Container.withRegistryAuth`` + ``publish`` (the daemon tags and pushes the state to the
  address with those credentials and the answer is the engine's ``ADDRESS@sha256:…``; the
  password never reaches a log), ``Host.service`` bound to an exec (``tcp://localhost:PORT``
  arguments; see below).

What it does **not** model (a test passing here does not prove these):

- Caching and content-addressed layers. Within one harness identical recipes are evaluated
  once (IDs come from recipes); nothing is cached across harness instances (except Docker's
  own build cache and the cache volumes); function cache policies (``cache="never"``) change
  nothing here; there are no layer digests, no lazy pulls, no cache mounts in Dockerfiles.
- BuildKit: ``dockerBuild`` uses Docker's classic builder (no ``RUN --mount``, no build
  secrets, no multi-platform); its error texts are translated, not BuildKit's own.
- Service networking in detail: one network per dependent exec, so a binding's alias is
  visible to every container on it (Dagger scopes aliases to the dependent); no service
  hostnames, no ``Service.endpoint``/``start``/``stop``; no health checks beyond Docker's
  HEALTHCHECK and TCP port waits; the wait gives up after ``HEALTH_WAIT_S``.
- ``Host.service`` exactly: an exec bound to one runs in the host's network namespace with
  the alias naming 127.0.0.1, so *every* host port is reachable through it, not only the
  forwarded ones (Dagger tunnels just those through the CLI's session); one beside container
  services, or bound to a service, is refused. ``publish``: the daemon's push (Docker image
  manifest), no ``platformVariants``/compression/media-type choices, no layer cache of the
  engine's own.
- ``insecureRootCapabilities`` exactly: this machine's dockerd cannot start privileged
  containers, so such containers get every capability the daemon can grant, no seccomp or
  AppArmor profile, and the memory cgroup hierarchy (cgroup v1) bind-mounted writable — what
  the memory guard needs; Dagger's own writable cgroupfs may differ (cgroup v2 hosts).
- The module runtime's container: the SDK runs as a host subprocess with this repository's
  ``dagger-io`` (pinned in pyproject), not in the SDK's runtime image with a generated
  ``ci/sdk``; ``dagger develop``/codegen, dependencies between modules, telemetry, ``terminal``
  and ``-i`` (interactive) are absent; file ownership and timestamps are not kept.
- Anything else in the schema: answered with "not modelled by the harness".
"""

from .engine import Engine, EngineError
from .module import FunctionFailed, Harness

__all__ = ["Engine", "EngineError", "FunctionFailed", "Harness"]
