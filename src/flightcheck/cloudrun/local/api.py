"""The HTTP face of the local Cloud Run: the run_v2 REST surface plus a small admin API.

run_v2 (as the official client's REST transport sends it; JSON is the proto3 mapping, enums
answered as names, or as numbers when the client asks with ``$alt=json;enum-encoding=int``):

    POST   /v2/{parent}/services?serviceId=S[&validateOnly=true]      → Operation
    GET    /v2/{parent}/services                                       → ListServicesResponse
    GET    /v2/{parent}/services/S                                     → Service
    PATCH  /v2/{parent}/services/S?updateMask=&allowMissing=&validateOnly= → Operation
    DELETE /v2/{parent}/services/S[?etag=&validateOnly=]               → Operation
    GET|POST /v2/{parent}/services/S:getIamPolicy, POST …:setIamPolicy, POST …:testIamPermissions
    GET    /v2/{parent}/services/S/revisions[/R], DELETE …/revisions/R → Revision(s) / Operation
    GET    /v2/{parent}/operations[/OP], POST …/operations/OP:wait, DELETE …/operations/OP

Admin (not run_v2; used by the rollout and the tests):

    GET  /flightcheck/v1/status                              emulator, runtime, instances
    GET  /flightcheck/v1/services/S/metrics?since=TS&via=service|tag   per-revision metrics
    GET  /flightcheck/v1/revisions/R                         state, instance and sidecar URLs
    GET  /flightcheck/v1/revisions/R/logs?tail=N             last log lines of a revision
    POST /flightcheck/v1/faults {"status": 429, "count": N, "method": "PATCH"}
    POST /flightcheck/v1/permissions {"deny": ["run.services.setIamPolicy"]}
    POST /flightcheck/v1/shutdown

Identity (Google's wire shapes, for private services; see :mod:`.identity`):

    POST /token                     the JWT-bearer grant with target_audience → {"id_token"}
    GET  /oauth2/v1/certs           the issuer's public keys by key id
    GET  /flightcheck/v1/deployer-key   the deployer's key file (admin: loopback only)
    POST /v1/projects/P/serviceAccounts/EMAIL/keys   a new key file (base64 privateKeyData)
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from flightcheck.cloudrun.local._http import (
    MAX_HEAD,
    BadRequest,
    Request,
    close,
    json_response,
    read_request,
)
from flightcheck.cloudrun.local.control import Emulator, Operation, to_dict
from flightcheck.cloudrun.local.errors import STATUS, ApiError, invalid, not_found
from flightcheck.cloudrun.local.identity import key_file_payload
from flightcheck.cloudrun.local.metrics import VIA_SERVICE, VIA_TAG

_P = r"(?P<parent>projects/[^/]+/locations/[^/]+)"
_S = r"(?P<service>[^/:]+)"
_WAIT_MAX_S = 60.0
_FAULT_MESSAGES = {
    "RESOURCE_EXHAUSTED": "Quota exceeded for quota metric 'Write requests' and limit 'Write "
    "requests per minute per region' of service 'run.googleapis.com' (injected by the local "
    "Cloud Run's fault knob).",
    "UNAVAILABLE": "The service is currently unavailable (injected by the local Cloud Run's "
    "fault knob).",
}

Handler = Callable[[Request, "re.Match[str]", bool], Awaitable[tuple[int, Any]]]


@dataclass
class Fault:
    status: str
    remaining: int
    method: str | None = None


def _bool(req: Request, name: str) -> bool:
    return req.param(name).lower() in ("true", "1")


def _page(items: list[Any], req: Request) -> tuple[list[Any], str]:
    try:
        start = int(req.param("pageToken") or 0)
        size = int(req.param("pageSize") or 0) or 100
    except ValueError:
        raise invalid("pageToken/pageSize must be numbers") from None
    chunk = items[start:start + size]
    return chunk, str(start + size) if start + size < len(items) else ""


def _listed(key: str, items: list[Any], req: Request, convert: Callable[[Any], Any]
            ) -> tuple[int, Any]:
    """A run_v2 list answer: one page of ``key``, and the next page's token while one follows."""
    page, token = _page(items, req)
    out: dict[str, Any] = {key: [convert(x) for x in page]}
    if token:
        out["nextPageToken"] = token
    return 200, out


class Api:
    """Routes requests to the emulator; answers Google-shaped JSON and errors."""

    def __init__(self, emu: Emulator, *, runtime: str, on_shutdown: Callable[[], None]) -> None:
        self.emu = emu
        self.runtime = runtime
        self.on_shutdown = on_shutdown
        self.faults: list[Fault] = []
        self.started = time.time()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler, str]] = []
        r = self._route
        r("POST", rf"/v2/{_P}/services", self.create_service, "run.services.create")
        r("GET", rf"/v2/{_P}/services", self.list_services, "run.services.list")
        r("GET", rf"/v2/{_P}/services/{_S}", self.get_service, "run.services.get")
        r("PATCH", rf"/v2/{_P}/services/{_S}", self.update_service, "run.services.update")
        r("DELETE", rf"/v2/{_P}/services/{_S}", self.delete_service, "run.services.delete")
        r("GET", rf"/v2/{_P}/services/{_S}:getIamPolicy", self.get_iam, "run.services.getIamPolicy")
        r("POST", rf"/v2/{_P}/services/{_S}:getIamPolicy", self.get_iam,
          "run.services.getIamPolicy")
        r("POST", rf"/v2/{_P}/services/{_S}:setIamPolicy", self.set_iam, "")  # checked inside
        r("POST", rf"/v2/{_P}/services/{_S}:testIamPermissions", self.test_iam, "")
        r("GET", rf"/v2/{_P}/services/{_S}/revisions", self.list_revisions, "run.revisions.list")
        r("GET", rf"/v2/{_P}/services/{_S}/revisions/(?P<revision>[^/:]+)", self.get_revision,
          "run.revisions.get")
        r("DELETE", rf"/v2/{_P}/services/{_S}/revisions/(?P<revision>[^/:]+)",
          self.delete_revision, "run.revisions.delete")
        r("GET", rf"/v2/{_P}/operations", self.list_operations, "run.operations.list")
        r("GET", rf"/v2/{_P}/operations/(?P<op>[^/:]+)", self.get_operation, "run.operations.get")
        r("POST", rf"/v2/{_P}/operations/(?P<op>[^/:]+):wait", self.wait_operation,
          "run.operations.get")
        r("DELETE", rf"/v2/{_P}/operations/(?P<op>[^/:]+)", self.delete_operation,
          "run.operations.delete")
        r("GET", r"/flightcheck/v1/status", self.status, "")
        r("GET", rf"/flightcheck/v1/(?:{_P}/)?services/{_S}/metrics", self.metrics, "")
        r("GET", r"/flightcheck/v1/revisions/(?P<revision>[^/]+)", self.revision_info, "")
        r("GET", r"/flightcheck/v1/revisions/(?P<revision>[^/]+)/logs", self.logs, "")
        r("POST", r"/flightcheck/v1/faults", self.set_faults, "")
        r("POST", r"/flightcheck/v1/permissions", self.set_permissions, "")
        r("POST", r"/flightcheck/v1/shutdown", self.shutdown, "")
        # Google's identity endpoints, for private services (see .identity)
        r("POST", r"/token", self.token, "")
        r("GET", r"/oauth2/v1/certs", self.certs, "")
        r("GET", r"/flightcheck/v1/deployer-key", self.deployer_key, "")
        r("POST", r"/v1/projects/(?P<project>[^/]+)/serviceAccounts/(?P<email>[^/]+)/keys",
          self.create_key, "")

    def _route(self, method: str, pattern: str, handler: Handler, permission: str) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler, permission))

    # --- serving -----------------------------------------------------------------------------

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, limit=MAX_HEAD,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    req = await read_request(reader, writer)
                except BadRequest as exc:
                    writer.write(json_response(exc.status, ApiError(
                        "INVALID_ARGUMENT", exc.message).body(), keep_alive=False))
                    break
                if req is None:
                    break
                status, payload = await self.handle(req)
                writer.write(json_response(status, payload, keep_alive=req.keep_alive))
                await writer.drain()
                if not req.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # the loop is closing: end this connection quietly
            pass
        finally:
            await close(writer)

    async def handle(self, req: Request) -> tuple[int, Any]:
        path = req.path
        allowed: list[str] = []
        for method, pattern, handler, permission in self._routes:
            m = pattern.match(path)
            if m is None:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            ints = "enum-encoding=int" in req.param("$alt")
            try:
                if path.startswith("/v2/"):
                    self._fault(req)
                    if permission and permission in self.emu.denied:
                        resource = path[4:].rsplit(":", 1)[0]
                        raise ApiError("PERMISSION_DENIED", f"Permission '{permission}' denied on "
                                       f"resource '{resource}' (or it may not exist).")
                return await handler(req, m, ints)
            except ApiError as exc:
                return exc.http, exc.body()
            except BadRequest as exc:
                return exc.status, ApiError("INVALID_ARGUMENT", exc.message).body()
            except Exception as exc:  # a bug here must still answer, in Google's shape
                self.emu.log(f"internal error on {req.method} {path}: {exc!r}")
                return 500, ApiError("INTERNAL", f"internal error: {exc}").body()
        if allowed:
            body = ApiError("UNIMPLEMENTED", f"{req.method} is not allowed on {path} "
                            f"(allowed: {', '.join(sorted(set(allowed)))})").body()
            body["error"]["code"] = 405
            return 405, body
        return 404, ApiError("NOT_FOUND", f"The requested URL {path} was not found on this "
                             "server.").body()

    def _fault(self, req: Request) -> None:
        for fault in self.faults:
            if fault.remaining > 0 and fault.method in (None, req.method):
                fault.remaining -= 1
                self.faults = [f for f in self.faults if f.remaining > 0]
                raise ApiError(fault.status, _FAULT_MESSAGES.get(
                    fault.status, f"{fault.status} (injected by the local Cloud Run's fault knob)"))

    # --- run_v2: services ----------------------------------------------------------------------

    def _op(self, op: Operation, ints: bool) -> tuple[int, Any]:
        return 200, json_format.MessageToDict(op.op, use_integers_for_enums=ints)

    async def create_service(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        op = self.emu.create_service(m["parent"], req.param("serviceId"), req.json(),
                                     _bool(req, "validateOnly"))
        return self._op(op, ints)

    async def list_services(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        items = sorted((s for s in self.emu.services.values()
                        if s.name.startswith(m["parent"] + "/")), key=lambda s: s.name)
        return _listed("services", items, req, lambda s: to_dict(s.svc, ints=ints))

    async def get_service(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        name = f"{m['parent']}/services/{m['service']}"
        return 200, to_dict(self.emu.service(name).svc, ints=ints)

    async def update_service(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        name = f"{m['parent']}/services/{m['service']}"
        body = req.json()
        if isinstance(body, dict) and body.get("name") not in (None, "", name):
            raise invalid(f"service.name {body.get('name')!r} does not match the URL ({name})")
        op = self.emu.update_service(name, {**body, "name": name} if isinstance(body, dict)
                                     else body, req.param("updateMask"),
                                     _bool(req, "allowMissing"), _bool(req, "validateOnly"))
        return self._op(op, ints)

    async def delete_service(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        name = f"{m['parent']}/services/{m['service']}"
        op = self.emu.delete_service(name, _bool(req, "validateOnly"), req.param("etag"))
        return self._op(op, ints)

    # --- run_v2: IAM -------------------------------------------------------------------------

    async def get_iam(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        name = f"{m['parent']}/services/{m['service']}"
        return 200, json_format.MessageToDict(self.emu.get_iam(name))

    async def set_iam(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        name = f"{m['parent']}/services/{m['service']}"
        return 200, json_format.MessageToDict(self.emu.set_iam(name, req.json()))

    async def test_iam(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        name = f"{m['parent']}/services/{m['service']}"
        body = req.json()
        wanted = body.get("permissions", []) if isinstance(body, dict) else []
        return 200, {"permissions": self.emu.test_iam(name, [str(p) for p in wanted])}

    # --- run_v2: revisions ---------------------------------------------------------------------

    async def list_revisions(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        parent = f"{m['parent']}/services/{m['service']}"
        return _listed("revisions", self.emu.revisions_of(parent), req,
                       lambda r: to_dict(r.rev, ints=ints))

    async def get_revision(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        name = f"{m['parent']}/services/{m['service']}/revisions/{m['revision']}"
        return 200, to_dict(self.emu.revision(name).rev, ints=ints)

    async def delete_revision(self, req: Request, m: re.Match[str], ints: bool
                              ) -> tuple[int, Any]:
        name = f"{m['parent']}/services/{m['service']}/revisions/{m['revision']}"
        op = self.emu.delete_revision(name, req.param("etag"), _bool(req, "validateOnly"))
        return self._op(op, ints)

    # --- run_v2: operations --------------------------------------------------------------------

    async def list_operations(self, req: Request, m: re.Match[str], ints: bool
                              ) -> tuple[int, Any]:
        ops = [o for name, o in sorted(self.emu.operations.items())
               if name.startswith(m["parent"] + "/")]
        return _listed("operations", ops, req,
                       lambda o: json_format.MessageToDict(o.op, use_integers_for_enums=ints))

    async def get_operation(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        return self._op(self.emu.operation(f"{m['parent']}/operations/{m['op']}"), ints)

    async def wait_operation(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        op = self.emu.operation(f"{m['parent']}/operations/{m['op']}")
        body = req.json()
        timeout = _WAIT_MAX_S
        raw = body.get("timeout") if isinstance(body, dict) else None
        if isinstance(raw, str) and raw.endswith("s"):
            try:
                timeout = min(_WAIT_MAX_S, float(raw[:-1]))
            except ValueError:
                raise invalid(f"timeout {raw!r} is not a duration like '10s'") from None
        try:
            await asyncio.wait_for(op.done.wait(), timeout)
        except TimeoutError:
            pass
        return self._op(op, ints)

    async def delete_operation(self, req: Request, m: re.Match[str], ints: bool
                               ) -> tuple[int, Any]:
        name = f"{m['parent']}/operations/{m['op']}"
        self.emu.operation(name)
        self.emu.operations.pop(name, None)
        return 200, {}

    # --- admin -------------------------------------------------------------------------------

    async def status(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        return 200, {
            "pid": os.getpid(),
            "api": f"http://127.0.0.1:{self.port}",
            "runtime": self.runtime,
            "started": self.started,
            "state_dir": str(self.emu.state_dir),
            "services": {s.short: {"name": s.name, "uri": s.svc.uri, "split": s.split,
                                   "tags": s.tags} for s in self.emu.services.values()},
            "instances": self.emu.instances(),
        }

    async def metrics(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        name = m["service"] if not m["parent"] else f"{m['parent']}/services/{m['service']}"
        try:
            since = float(req.param("since") or 0)
        except ValueError:
            raise invalid("since must be epoch seconds, e.g. 1760000000.5") from None
        s = self.emu.find_service(name)
        via = {"": None, "all": None, "service": VIA_SERVICE, "tag": VIA_TAG}.get(req.param("via"),
                                                                                -1)
        if via == -1:
            raise invalid("via must be service, tag or all")
        return 200, {"service": s.name, "since": since, "now": time.time(),
                     "split": s.split, "tags": s.tags,
                     "revisions": s.metrics.summary(since, via)}

    async def revision_info(self, req: Request, m: re.Match[str], ints: bool
                            ) -> tuple[int, Any]:
        rev = self.emu.find_revision(m["revision"])
        inst = rev.instance
        return 200, {"name": rev.short, "full_name": rev.rev.name, "state": rev.state,
                     "message": rev.message,
                     "endpoint": inst.endpoint if inst else None,
                     "sidecar_endpoint": inst.sidecar_endpoint if inst else None,
                     "container": inst.container_id if inst else None}

    async def logs(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        try:
            tail = int(req.param("tail") or 100)
        except ValueError:
            raise invalid("tail must be a number of lines") from None
        rev = self.emu.find_revision(m["revision"])
        return 200, {"revision": rev.rev.name, "state": rev.state, "message": rev.message,
                     "logs": await self.emu.logs(rev.rev.name, tail)}

    async def set_faults(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        body = req.json()
        if not isinstance(body, dict):
            raise invalid("body must be an object")
        code = body.get("status", 503)
        count = body.get("count", 1)
        by_http = {http: name for name, (_, http) in STATUS.items()}
        by_http[429] = "RESOURCE_EXHAUSTED"
        by_http[503] = "UNAVAILABLE"
        by_http[409] = "ABORTED"
        by_http[400] = "INVALID_ARGUMENT"
        status = by_http.get(code) if isinstance(code, int) else code if code in STATUS else None
        if status is None or not isinstance(count, int) or count < 0:
            raise invalid("faults: {\"status\": 429|503|<canonical status>, \"count\": N >= 0, "
                          "\"method\": optional HTTP method}")
        method = body.get("method")
        if count == 0:
            self.faults.clear()
        else:
            self.faults.append(Fault(status, count, str(method).upper() if method else None))
        return 200, {"faults": [f.__dict__ for f in self.faults]}

    async def token(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        return self.emu.identity.token(req.body)

    async def certs(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        return 200, self.emu.identity.certs()

    async def deployer_key(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        return 200, self.emu.identity.deployer_key()

    async def create_key(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        email = m["email"]
        if "@" not in email:
            raise invalid(f"{email!r} is not a service account's email")
        return 200, key_file_payload(self.emu.identity.create_key(email))

    async def set_permissions(self, req: Request, m: re.Match[str], ints: bool
                              ) -> tuple[int, Any]:
        body = req.json()
        deny = body.get("deny", []) if isinstance(body, dict) else None
        if not isinstance(deny, list) or not all(isinstance(p, str) for p in deny):
            raise invalid("permissions: {\"deny\": [\"run.services.setIamPolicy\", ...]}")
        self.emu.denied = set(deny)
        return 200, {"denied": sorted(self.emu.denied)}

    async def shutdown(self, req: Request, m: re.Match[str], ints: bool) -> tuple[int, Any]:
        asyncio.get_running_loop().call_soon(self.on_shutdown)
        return 200, {"stopping": True}


__all__ = ["Api", "not_found"]
