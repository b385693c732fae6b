"""API errors in Google's shape: a canonical status, its HTTP code, and a message.

The JSON body ``{"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}`` is what
``google.api_core.exceptions.from_http_response`` reads to raise the matching class
(``NotFound``, ``Aborted``, ``TooManyRequests``, ...), so clients see the same exceptions as
against Cloud Run.
"""

from __future__ import annotations

from typing import Any

# canonical status → (gRPC code number, HTTP status), per google/rpc/code.proto
STATUS: dict[str, tuple[int, int]] = {
    "CANCELLED": (1, 499),
    "UNKNOWN": (2, 500),
    "INVALID_ARGUMENT": (3, 400),
    "DEADLINE_EXCEEDED": (4, 504),
    "NOT_FOUND": (5, 404),
    "ALREADY_EXISTS": (6, 409),
    "PERMISSION_DENIED": (7, 403),
    "RESOURCE_EXHAUSTED": (8, 429),
    "FAILED_PRECONDITION": (9, 400),
    "ABORTED": (10, 409),
    "OUT_OF_RANGE": (11, 400),
    "UNIMPLEMENTED": (12, 501),
    "INTERNAL": (13, 500),
    "UNAVAILABLE": (14, 503),
    "UNAUTHENTICATED": (16, 401),
}


class ApiError(Exception):
    """An error answer of the run_v2 API."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def code(self) -> int:
        return STATUS[self.status][0]

    @property
    def http(self) -> int:
        return STATUS[self.status][1]

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.http, "message": self.message, "status": self.status}}

    def rpc_status(self) -> dict[str, Any]:
        """As a google.rpc.Status (an Operation's ``error``)."""
        return {"code": self.code, "message": self.message}


def not_found(name: str) -> ApiError:
    return ApiError("NOT_FOUND", f"Resource '{name}' was not found")


def invalid(message: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message)
