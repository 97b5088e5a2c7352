"""A local OpenAI-compatible upstream for the proxy tests (loopback only).

Modes, per upstream model name or as the default:
  ok       answer (streams SSE when the request says stream=true)
  500      answer 500
  timeout  wait `delay` seconds, then answer (longer than the proxy's timeout)
  broken   stream one chunk, then drop the connection
  gzip     answer with content-encoding: gzip (JSON and streams)
  nousage  stream without a usage chunk even when stream_options.include_usage asks for one
A stream ends with a usage chunk (choices: []) when stream_options.include_usage is true.

    up = FakeUpstream().start()          # http://127.0.0.1:<port>/v1
    up.modes["gpt-4o"] = "500"
    ...; up.calls -> [(model, stream), ...]; up.stop()

`python -m tests.fake_upstream --port 8901` runs it standalone (make schemathesis)."""
from __future__ import annotations

import argparse
import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, default: str = "ok", delay: float = 3.0):
        self.modes: dict[str, str] = {}
        self.default = default
        self.delay = delay
        self.calls: list[tuple[str, bool]] = []
        self._lock = threading.Lock()
        up = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    return self._json(200, {"object": "list", "data": []})
                self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except ValueError:
                    return self._json(400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                model = str(body.get("model"))
                stream = bool(body.get("stream"))
                with up._lock:
                    up.calls.append((model, stream))
                    mode = up.modes.get(model, up.default)
                if mode == "500":
                    return self._json(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
                if mode == "timeout":
                    time.sleep(up.delay)
                text = f"hello from {model}"
                self.gzip = mode == "gzip"
                if stream:
                    usage = bool((body.get("stream_options") or {}).get("include_usage")) and mode != "nousage"
                    return self._stream(model, text, broken=(mode == "broken"), usage=usage)
                self._json(200, {
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                    "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})

            def _json(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                if getattr(self, "gzip", False):
                    data = gzip.compress(data)
                    self.send_header("content-encoding", "gzip")
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, model, text, broken=False, usage=False):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                events = []
                words = text.split(" ")
                for i, w in enumerate(words):
                    chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": model, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + w},
                                                          "finish_reason": None}]}
                    events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    if broken:
                        break
                if not broken:
                    done = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                    events.append(b"data: " + json.dumps(done).encode() + b"\n\n")
                    if usage:
                        u = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": model, "choices": [],
                             "usage": {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}}
                        events.append(b"data: " + json.dumps(u).encode() + b"\n\n")
                    events.append(b"data: [DONE]\n\n")
                if getattr(self, "gzip", False):
                    self.send_header("content-encoding", "gzip")
                    self.end_headers()
                    self.wfile.write(gzip.compress(b"".join(events)))
                else:
                    self.end_headers()
                    for e in events:
                        self.wfile.write(e)
                        self.wfile.flush()
                self.close_connection = True

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeUpstream":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.modes.clear()
            self.calls.clear()


def main() -> None:
    p = argparse.ArgumentParser(description="fake OpenAI-compatible upstream")
    p.add_argument("--port", type=int, default=8901)
    p.add_argument("--mode", default="ok")
    args = p.parse_args()
    up = FakeUpstream(port=args.port, default=args.mode)
    print(f"fake upstream on {up.url} (mode {args.mode})", flush=True)
    up.server.serve_forever()


if __name__ == "__main__":
    main()
