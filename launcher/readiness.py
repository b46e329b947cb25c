"""HTTP probes that tell when an OpenAI-compatible engine is ready to take requests.

An engine is ready in two steps: `GET /health` answers 200 (the server is up, weights are
loaded), then `GET /v1/models` answers 200 with a JSON `data` list (the model is registered
with the API). SGLang, vLLM and the bundled runtime all follow this shape. Probes use the
standard library with proxies disabled: a user's HTTP_PROXY must not swallow a probe to
localhost.

All three keep /health open and answer 401 on /v1 without the right key, so a key mismatch
shows as /v1/models refusing the probe. The probe records that refusal instead of retrying:
no amount of waiting makes a wrong key right.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import urllib.error
import urllib.request

PHASE_HEALTH = "health"
PHASE_MODELS = "models"
PHASE_ENDPOINTS = {PHASE_HEALTH: "/health", PHASE_MODELS: "/v1/models"}
KEY_REJECTED_STATUSES = (401, 403)

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def local_base_url(host: str, port: int) -> str:
    """The URL a local client uses to reach a server bound to `host:port`."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"http://{host}:{port}"


def http_get(url: str, api_key: str | None, timeout_s: float) -> tuple[int, bytes] | None:
    """GET `url` (with a Bearer key if given); the status and body, or None if unreachable."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        try:
            with _NO_PROXY_OPENER.open(request, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        # Refused, reset, timed out, or a protocol error from a server still starting up.
        return None


def probe_health(base_url: str, api_key: str | None, timeout_s: float) -> bool:
    """Whether `GET {base_url}/health` answers 200."""
    answer = http_get(base_url + PHASE_ENDPOINTS[PHASE_HEALTH], api_key, timeout_s)
    return answer is not None and answer[0] == 200


def probe_models(base_url: str, api_key: str | None, timeout_s: float) -> list[str] | None:
    """The served model ids if `GET {base_url}/v1/models` answers 200 with a `data` list."""
    return model_ids(http_get(base_url + PHASE_ENDPOINTS[PHASE_MODELS], api_key, timeout_s))


def model_ids(answer: tuple[int, bytes] | None) -> list[str] | None:
    """The model ids in a /v1/models answer, or None unless it is a 200 with a `data` list."""
    if answer is None or answer[0] != 200:
        return None
    try:
        payload = json.loads(answer[1])
    except ValueError:
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    return [str(entry["id"]) for entry in data if isinstance(entry, dict) and "id" in entry]


class ReadinessProbe:
    """Walks the two readiness phases; `poll()` returns the model ids once both pass."""

    def __init__(self, base_url: str, api_key: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.phase = PHASE_HEALTH
        self.rejected_status: int | None = None  # 401 or 403: the engine refused our key (or lack of one)

    def poll(self, timeout_s: float) -> list[str] | None:
        """Probe the current phase once; the served model ids when ready, else None."""
        if self.phase == PHASE_HEALTH:
            answer = self._get(PHASE_HEALTH, timeout_s)
            if answer is None or answer[0] != 200:
                return None
            self.phase = PHASE_MODELS
        return model_ids(self._get(PHASE_MODELS, timeout_s))

    def _get(self, phase: str, timeout_s: float) -> tuple[int, bytes] | None:
        answer = http_get(self.base_url + PHASE_ENDPOINTS[phase], self.api_key, timeout_s)
        # Checked on /health too: an engine may guard every path, not only /v1.
        if answer is not None and answer[0] in KEY_REJECTED_STATUSES:
            self.rejected_status = answer[0]
        return answer
