"""API errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with the right status."""
from __future__ import annotations

import re
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}
_STATUS_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 408: "timeout_error",
                 413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 504: "timeout_error"}


class APIError(Exception):
    """An error the client caused or must wait out; rendered as OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 error_type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type or _STATUS_TYPES.get(status, "server_error" if status >= 500 else
                                                            "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON error object."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """A JSONResponse carrying this error and its headers."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 invalid_request_error."""
    return APIError(400, message, param=param, code=code)


def client_closed() -> APIError:
    """A 499 (nginx's "client closed request"): nobody reads it, the metrics count it."""
    return APIError(499, "The client closed the connection before the answer was ready.", code="client_closed")


def _is_field(part: str) -> bool:
    return bool(_FIELD_NAME.match(part)) and part not in _TYPE_TAGS


def _param_path(loc: tuple[Any, ...]) -> tuple[str, bool]:
    """The field path of a pydantic location, and whether it ran into a union member.

    Locations mix field names with union-member tags ('str', 'list[str]', 'NamedToolChoice',
    "literal['auto']"); the path stops at the first tag, since below it the union's members
    disagree about what the value should have been.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and _is_field(part):
            path += f".{part}" if path else part
        else:
            return path, True
    return path, False


def from_validation_error(error: ValidationError, prefix: str = "") -> APIError:
    """A 400 naming the first invalid field of a request body."""
    first = error.errors(include_url=False)[0]
    param, union = _param_path(tuple(first.get("loc", ())))
    if prefix:
        param = f"{prefix}.{param}" if param else prefix
    kind = first.get("type", "")
    if kind == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if kind == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: '{param}'.", param, "unknown_parameter")
    text = "it matches none of the accepted types" if union else first.get("msg", "invalid value")
    given = first.get("input")
    shown = repr(given) if isinstance(given, (str, int, float, bool)) or given is None else type(given).__name__
    return bad_request(f"Invalid value for '{param}': {text} (got {shown}).", param or None, "invalid_value")
