"""Reading a request body: its bytes under a size cap and a deadline, its JSON, and the pydantic model.

A body is refused with a 4xx, never a 5xx, for anything JSON or Python cannot take: invalid
UTF-8, NaN and Infinity, integers past Python's 4300-digit conversion limit, nesting deeper
than MAX_JSON_DEPTH (json.loads itself would hit the recursion limit near 1000), and lone
UTF-16 surrogates ("\\ud800" decodes to a str the tokenizer and the response encoder reject).
A client that leaves mid-upload is a 499, one that stops sending a 408.
"""
from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from qwen35.runtime.server.errors import APIError, bad_request, client_closed, from_validation_error

Body = TypeVar("Body", bound=BaseModel)
MAX_JSON_DEPTH = 64  # a tool's JSON schema nests a dozen levels; nothing a client sends needs more


async def read_json_body(request: Request, limit: int, timeout: float | None = None) -> dict[str, Any]:
    """The request's JSON object: 413 past `limit` bytes, 408 when it takes longer than `timeout` seconds
    to arrive, 499 when the client leaves mid-upload, 400 when it is not a JSON object we can take."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"Request body is {declared} bytes; this server accepts at most {limit}.",
                       code="request_too_large")
    try:
        raw = await asyncio.wait_for(_read_body(request, limit), timeout)
    except asyncio.TimeoutError:
        raise APIError(408, f"The request body did not arrive within {timeout:g} seconds.", code="request_timeout",
                       headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise client_closed() from None
    if not raw.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise bad_request(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.", code="invalid_json") \
            from None
    except (json.JSONDecodeError, _NotJSON) as error:
        raise bad_request(f"The request body is not valid JSON: {error}.", code="invalid_json") from None
    except UnicodeDecodeError:
        raise bad_request("The request body is not valid UTF-8 text.", code="invalid_json") from None
    except ValueError:  # int() refuses a literal past sys.get_int_max_str_digits()
        raise bad_request(f"The request body holds an integer of more than {sys.get_int_max_str_digits()} "
                          "digits.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request(f"The request body must be a JSON object, not {type(data).__name__}.", code="invalid_json")
    check_json_tree(data)
    return data


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"Request body exceeds {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


class _NotJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON number")


def _child(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key


def _check_text(text: str, path: str, key: str | int) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            param = _child(path, key)[:200].encode("utf-8", "backslashreplace").decode()
            raise bad_request(f"Invalid value for '{param}': it holds a lone UTF-16 surrogate "
                              f"({text[error.start]!r}), which is not text; send valid Unicode.",
                              param, "invalid_unicode") from None


def check_json_tree(data: dict[str, Any]) -> None:
    """400 for nesting deeper than MAX_JSON_DEPTH or a lone surrogate in any string (keys too), naming where."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise bad_request(f"The request body nests deeper than {MAX_JSON_DEPTH} levels (at '{path[:200]}').",
                              path[:200] or None, "invalid_json")
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(key, str):
                _check_text(key, path, key)
            if isinstance(item, str):
                _check_text(item, path, key)
            elif isinstance(item, (dict, list)):
                stack.append((item, depth + 1, _child(path, key)))


def parse_body(model: type[Body], data: dict[str, Any]) -> Body:
    """Validate a JSON object against a request model; 400 naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error) from None
