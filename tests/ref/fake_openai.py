"""A fake OpenAI-compatible chat/completions server for retort's tests and benchmark
(stdlib only: ThreadingHTTPServer, HTTP/1.1 keep-alive, chunked SSE).

    python fake_openai.py [--port 0] [--latency S] [--token-latency S] [--style reasoning|inline|mixed]
                          [--p429 P] [--retry-after V] [--p500 P] [--pdrop P] [--ptrunc P]
                          [--max-faults N] [--fault-seed S] [--api-key K] [--model-name M] [--no-usage-details]
                          [--answer-mod M] [--ignore-stream] [--pstall P] [--stall S]

Prints "PORT <n>" on its first stdout line once listening.

Outputs are deterministic: the completion for (last user message, seed) is
    reasoning R = "Let me think about H0.\\nFirst H1; then H2." and answer A = "The answer is \\\\boxed{N}."
where H = sha256(content + "\\0" + str(seed)) (expected_sample() gives them), sent either as
reasoning_content "R\\n" + content "\\n\\nA" (style reasoning: vLLM's reasoning parser) or
inline as content "R\\n</think>\\n\\nA" (style inline: R1's template forced "<think>\\n" into
the prompt). Tokens are the whitespace-delimited pieces of "R\\n</think>\\n\\nA"; max_tokens cuts
them (finish "length"). usage: prompt_tokens = words of the prompt, completion_tokens,
completion_tokens_details.reasoning_tokens (pieces before "</think>", the tag counted with them).

Faults, drawn per request with a seeded RNG (at most --max-faults per distinct (content, seed),
so every request succeeds eventually): 429 with Retry-After (--retry-after: seconds, or "date"
for an HTTP date 2 s ahead, at least 1 s once rounded to the second), 500, a connection dropped mid-body (no chunked terminator / short
Content-Length), a truncated stream (clean HTTP end before the finish_reason event and [DONE]), a stall (no
response for --stall seconds, then the connection is closed). --latency delays each response
before its first byte; --token-latency each streamed token.

GET /v1/models lists --model-name; GET /stats returns counters, a log of
[time, content-hash, seed, outcome] per request and the request bodies; with --api-key a wrong key is 401.
"""
import argparse
import email.utils
import hashlib
import json
import random
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer_of(content, seed, mod=1000):
    h = hashlib.sha256(f"{content}\0{seed}".encode()).hexdigest()
    return int(h[24:30], 16) % mod


def outputs(content, seed, mod=1000):
    h = hashlib.sha256(f"{content}\0{seed}".encode()).hexdigest()
    reasoning = f"Let me think about {h[:8]}.\nFirst {h[8:16]}; then {h[16:24]}."
    answer = f"The answer is \\boxed{{{answer_of(content, seed, mod)}}}."
    return reasoning, answer


def expected_sample(content, seed, mod=1000):
    """The text retort should store for a completed (finish "stop") response."""
    r, a = outputs(content, seed, mod)
    return f"<think>\n{r}\n</think>\n\n{a}"


def tokens_of(content, seed, mod=1000):
    r, a = outputs(content, seed, mod)
    return re.findall(r"\S+\s*", f"{r}\n</think>\n\n{a}")


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.rng = random.Random(args.fault_seed)
        self.faults = {}
        self.log = []
        self.counts = {}
        self.requests = []   # the request bodies, as parsed

    def draw(self, key):
        a = self.args
        with self.lock:
            if self.faults.get(key, 0) >= a.max_faults:
                return "ok"
            u = self.rng.random()
            for kind, p in (("429", a.p429), ("500", a.p500), ("drop", a.pdrop), ("trunc", a.ptrunc),
                            ("stall", a.pstall)):
                if u < p:
                    self.faults[key] = self.faults.get(key, 0) + 1
                    return kind
                u -= p
            return "ok"

    def record(self, key, seed, outcome):
        with self.lock:
            self.log.append([time.time(), key, seed, outcome])
            self.counts[outcome] = self.counts.get(outcome, 0) + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_json(self, code, obj, headers=()):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        st = self.server.state
        if self.path.rstrip("/") == "/v1/models":
            if not self.authorized():
                return
            self.send_json(200, {"object": "list", "data": [{"id": st.args.model_name, "object": "model"}]})
        elif self.path == "/stats":
            with st.lock:
                self.send_json(200, {"counts": dict(st.counts), "log": list(st.log), "requests": list(st.requests)})
        else:
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})

    def authorized(self):
        key = self.server.state.args.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self.send_json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return False
        return True

    def do_POST(self):
        st, a = self.server.state, self.server.state.args
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self.send_json(404, {"error": {"message": f"no route {self.path}"}})
        if not self.authorized():
            return
        try:
            req = json.loads(raw)
            msgs = req["messages"]
            content = [m["content"] for m in msgs if m["role"] == "user"][-1]
        except Exception as e:  # noqa: BLE001 - any malformed request is a 400
            return self.send_json(400, {"error": {"message": f"bad request: {e}"}})
        seed = req.get("seed", 0)
        with st.lock:
            st.requests.append(req)
        key = hashlib.sha256(content.encode()).hexdigest()[:16]
        fault = st.draw((key, seed))
        st.record(key, seed, fault)
        if a.latency:
            time.sleep(a.latency)
        if fault == "429":
            ra = a.retry_after
            if ra == "date":
                ra = email.utils.formatdate(time.time() + 2, usegmt=True)   # ≥ 1 s ahead after rounding
            return self.send_json(429, {"error": {"message": "rate limited"}}, [("Retry-After", ra)])
        if fault == "500":
            return self.send_json(500, {"error": {"message": "internal error"}})
        if fault == "stall":   # longer than the client's timeout; then the connection goes
            time.sleep(a.stall)
            return self.drop()
        toks = tokens_of(content, seed, a.answer_mod)
        max_tokens = int(req.get("max_tokens") or 1 << 30)
        finish = "stop"
        if len(toks) > max_tokens:
            toks, finish = toks[:max_tokens], "length"
        style = a.style
        if style == "mixed":
            style = "reasoning" if int(key, 16) % 2 else "inline"
        usage = {"prompt_tokens": sum(len(m["content"].split()) for m in msgs), "completion_tokens": len(toks)}
        n_reason = next((i + 1 for i, t in enumerate(toks) if t.startswith("</think>")), len(toks))
        if a.usage_details:
            usage["completion_tokens_details"] = {"reasoning_tokens": n_reason}
        want_lp = bool(req.get("logprobs"))
        top = int(req.get("top_logprobs") or 0)

        def lp(i, t):
            return {"token": t, "logprob": -0.05 - 0.1 * (i % 5),
                    "top_logprobs": [{"token": f"token_id:{i * 10 + k}", "logprob": -0.05 - 0.1 * (i % 5) - k}
                                     for k in range(top)]}

        def split(ts, i0=0):
            """(reasoning piece, content piece) of the tokens ts starting at index i0."""
            text = "".join(ts)
            if style == "inline":
                return None, text
            r_end = max(0, min(len(ts), n_reason - i0))
            r = "".join(ts[:r_end])
            c = "".join(ts[r_end:])
            if r_end and i0 + r_end == n_reason:
                r = r[: r.rfind("</think>")] if "</think>" in r else r
            if c.startswith("</think>"):
                c = c[len("</think>"):]
            return r, c

        model = a.model_name
        if not req.get("stream") or a.ignore_stream:
            r, c = split(toks)
            msg = {"role": "assistant", "content": c}
            if r is not None:
                msg["reasoning_content"] = r
            ch = {"index": 0, "message": msg, "finish_reason": finish}
            if want_lp:
                ch["logprobs"] = {"content": [lp(i, t) for i, t in enumerate(toks)]}
            b = json.dumps({"id": "cmpl-1", "object": "chat.completion", "model": model, "choices": [ch],
                            "usage": usage}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            if fault in ("drop", "trunc"):
                self.wfile.write(b[: len(b) // 2])
                return self.drop()
            self.wfile.write(b)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [{"model": model, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                  "finish_reason": None}]}]
        for i, t in enumerate(toks):
            r, c = split([t], i)
            d = {}
            if r:
                d["reasoning_content"] = r
            if c:
                d["content"] = c
            ev = {"model": model, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
            if want_lp:
                ev["choices"][0]["logprobs"] = {"content": [lp(i, t)]}
            events.append(ev)
        events.append({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (req.get("stream_options") or {}).get("include_usage"):
            events.append({"model": model, "choices": [], "usage": usage})
        payload = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
        # a fault cuts the stream before the finish_reason event (index n_fin): the response is incomplete
        n_fin = len(toks) + 1
        cut = len(payload) if fault not in ("drop", "trunc") else st.rng.randrange(1, n_fin)
        try:
            for i, p in enumerate(payload[:cut]):
                if a.token_latency and i:
                    time.sleep(a.token_latency)
                self.chunk(p.encode())
            if fault == "drop":
                self.wfile.write(b"7f\r\ndata: {\"cho")   # half a chunk, then the connection goes
                return self.drop()
            self.wfile.write(b"0\r\n\r\n")                 # a clean end (truncated: before [DONE])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def chunk(self, b):
        self.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
        self.wfile.flush()

    def drop(self):
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024   # the listen backlog: 64 clients connecting at once


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--token-latency", type=float, default=0.0)
    ap.add_argument("--style", choices=["reasoning", "inline", "mixed"], default="reasoning")
    ap.add_argument("--p429", type=float, default=0.0)
    ap.add_argument("--retry-after", default="0")
    ap.add_argument("--p500", type=float, default=0.0)
    ap.add_argument("--pdrop", type=float, default=0.0)
    ap.add_argument("--ptrunc", type=float, default=0.0)
    ap.add_argument("--pstall", type=float, default=0.0)
    ap.add_argument("--stall", type=float, default=5.0)
    ap.add_argument("--max-faults", type=int, default=3)
    ap.add_argument("--fault-seed", type=int, default=1)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--model-name", default="fake-r1")
    ap.add_argument("--no-usage-details", dest="usage_details", action="store_false")
    ap.add_argument("--answer-mod", type=int, default=1000, help="answers are N mod this")
    ap.add_argument("--ignore-stream", action="store_true", help="answer plain JSON even when asked to stream")
    args = ap.parse_args(argv)
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.state = State(args)
    print(f"PORT {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
