"""A stand-in inference engine for the supervision tests (standard library only).

It logs like an engine, answers /health with 503 until `--ready-after-s` has passed, then
serves /health and /v1/models; the modes make it misbehave in the ways real engines do.
With `--spawn-child` it forks a sleeping worker first and logs `child pid=N`, so a test can
check that killing the group takes grandchildren with it; `--stop-child-on-exit` makes it stop
that worker itself on its way out, as real engines do with theirs.

`--api-key KEY` (or FAKE_ENGINE_API_KEY, read like vLLM reads VLLM_API_KEY when no flag is
given) makes /v1 answer `--reject-status` (401) without `Authorization: Bearer KEY`; /health
stays open as in SGLang, vLLM and `qwen35 serve`, unless `--key-guards-health`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("ready", "crash", "hang", "crash-after-ready", "no-models")
API_KEY_ENV = "FAKE_ENGINE_API_KEY"
CRASH_CODE = 3
CRASH_AFTER_READY_CODE = 5


_LOG_LOCK = threading.Lock()  # request threads log too; keep their lines whole


def log(message: str) -> None:
    with _LOG_LOCK, contextlib.suppress(BrokenPipeError):
        # A SIGKILLed launcher leaves no reader; keep going like an engine, not die on EPIPE.
        sys.stdout.write(f"fake-engine: {message}\n")
        sys.stdout.flush()


def make_handler(state: dict):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            guarded = self.path.startswith("/v1") or state["key_guards_health"]
            if guarded and state["api_key"] and self.headers.get("Authorization") != f"Bearer {state['api_key']}":
                return self.reply(state["reject_status"], {"error": "bad api key"})
            if self.path == "/health":
                return self.reply(200 if state["ready"] else 503, {})
            if self.path == "/v1/models" and state["ready"] and state["mode"] != "no-models":
                return self.reply(200, {"object": "list", "data": [{"id": state["model"], "object": "model"}]})
            return self.reply(404, {"error": "not found"})

        def reply(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, fmt, *args):
            log("request " + fmt % args)

    return Handler


def spawn_child(ignore_sigterm: bool) -> subprocess.Popen:
    code = "import signal, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "time.sleep(600)\n"
    child = subprocess.Popen([sys.executable, "-c", code])
    log(f"child pid={child.pid}")
    return child


class StopFlag:
    """Set from a signal handler without taking a lock: an Event's lock can deadlock there."""

    def __init__(self):
        self.received: list[int] = []

    def on_signal(self, signum, frame) -> None:
        self.received.append(signum)

    def wait(self, timeout_s: float | None = None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.received:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        log(f"received {signal.Signals(self.received[0]).name}, shutting down")
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--mode", choices=MODES, default="ready")
    parser.add_argument("--ready-after-s", type=float, default=0.0)
    parser.add_argument("--crash-after-s", type=float, default=0.3, help="for crash-after-ready")
    parser.add_argument("--spawn-child", action="store_true")
    parser.add_argument("--child-ignores-sigterm", action="store_true")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--reject-status", type=int, choices=(401, 403), default=401)
    parser.add_argument("--key-guards-health", action="store_true")
    parser.add_argument("--stop-child-on-exit", action="store_true")
    parser.add_argument("--startup-log", default="", help="a file of start-up lines to print while loading")
    parser.add_argument("--shutdown-s", type=float, default=0.0,
                        help="seconds a clean shutdown takes after the stop signal (more signals meanwhile are ignored)")
    args = parser.parse_args()

    log(f"starting pid={os.getpid()} pgid={os.getpgid(0)} mode={args.mode}")
    child = spawn_child(args.child_ignores_sigterm) if args.spawn_child else None
    try:
        return serve(args)
    finally:
        if child is not None and args.stop_child_on_exit:
            child.terminate()
            child.wait()


def serve(args: argparse.Namespace) -> int:
    stop = StopFlag()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN if args.ignore_sigterm else stop.on_signal)

    log("loading weights")
    if args.startup_log:
        with open(args.startup_log, encoding="utf-8") as lines:
            for line in lines:
                log(line.rstrip("\n"))
    if args.mode == "crash":
        stop.wait(args.ready_after_s)
        log("RuntimeError: CUDA out of memory (pretend)")
        return CRASH_CODE

    state = {"ready": False, "mode": args.mode, "model": args.model,
             "api_key": args.api_key or os.environ.get(API_KEY_ENV, ""),
             "reject_status": args.reject_status, "key_guards_health": args.key_guards_health}
    server = ThreadingHTTPServer((args.host, args.port), make_handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    log(f"listening on {args.host}:{args.port}")

    if args.mode == "hang":
        stop.wait()  # never ready; only a signal (or SIGKILL) ends it
        return 0
    if stop.wait(args.ready_after_s):
        return 0
    state["ready"] = True
    log("ready to serve")
    if args.mode == "crash-after-ready":
        stop.wait(args.crash_after_s)
        log("fatal: scheduler died (pretend)")
        return CRASH_AFTER_READY_CODE
    stop.wait()
    server.shutdown()
    time.sleep(args.shutdown_s)
    log(f"bye after {len(stop.received)} stop signal(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
