"""A scripted Ollama API for NixOS VM tests (Python standard library only).

Answers the endpoints Macha's Ollama backend uses, deterministically, with no model:

  GET  /api/version, /api/tags, /api/ps
  POST /api/show, /api/chat, /api/generate, /api/embed, /api/embeddings

Replies to /api/chat come from a script (JSON): a list of {"match": "<text>", "message": {...}};
the first entry whose "match" occurs in the request's last user message gives the assistant
message (which may carry "tool_calls"); otherwise the reply is {"role": "assistant", "content":
default}. Streaming requests ("stream" absent or true, as in Ollama) get NDJSON chunks. Every
request is appended to a log (JSON lines) so a test can see what Macha asked.
"""

import argparse
import hashlib
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


def embedding(text, dims=16):
    digest = hashlib.sha256(text.encode()).digest()
    return [round((b - 128) / 128, 6) for b in digest[:dims]]


class Stub(BaseHTTPRequestHandler):
    server_version = "ollama-stub/1"

    def log_request_json(self, body):
        with open(self.server.args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"path": self.path, "body": body}) + "\n")

    def reply(self, code, doc):
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, chunks):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        for c in chunks:
            self.wfile.write(json.dumps(c).encode() + b"\n")
            self.wfile.flush()

    def do_GET(self):
        models = [
            {"name": m, "model": m, "modified_at": now(), "size": 1, "digest": "0" * 64, "details": {}}
            for m in self.server.args.model
        ]
        if self.path == "/api/version":
            self.reply(200, {"version": "0.0.0-stub"})
        elif self.path in ("/api/tags", "/api/ps"):
            self.reply(200, {"models": models})
        elif self.path == "/":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"Ollama is running")
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as e:
            self.reply(400, {"error": f"invalid JSON: {e}"})
            return
        self.log_request_json(body)
        model = body.get("model", "stub")
        stats = {"total_duration": 1000, "load_duration": 1, "prompt_eval_count": 1, "eval_count": 1}
        if self.path == "/api/chat":
            message = self.scripted(body.get("messages") or [])
            final = {"model": model, "created_at": now(), "done": True, "done_reason": "stop", **stats}
            if body.get("stream", True):
                self.stream([
                    {"model": model, "created_at": now(), "message": message, "done": False},
                    {**final, "message": {"role": "assistant", "content": ""}},
                ])
            else:
                self.reply(200, {**final, "message": message})
        elif self.path == "/api/generate":
            text = self.scripted([{"role": "user", "content": body.get("prompt", "")}]).get("content", "")
            final = {"model": model, "created_at": now(), "response": text, "done": True, **stats}
            if body.get("stream", True):
                self.stream([{**final, "done": False}, {**final, "response": ""}])
            else:
                self.reply(200, final)
        elif self.path == "/api/embed":
            inputs = body.get("input", "")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            self.reply(200, {"model": model, "embeddings": [embedding(str(i)) for i in inputs]})
        elif self.path == "/api/embeddings":
            self.reply(200, {"embedding": embedding(str(body.get("prompt", "")))})
        elif self.path == "/api/show":
            self.reply(200, {
                "modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
                "details": {"family": "stub", "parameter_size": "0", "quantization_level": "none"},
                "model_info": {"general.context_length": 8192},
                "capabilities": ["completion", "tools", "embedding"],
            })
        else:
            self.reply(404, {"error": "not found"})

    def scripted(self, messages):
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        last = users[-1] if users else ""
        for entry in self.server.script:
            if entry.get("match", "") in last:
                return {"role": "assistant", "content": "", **entry["message"]}
        return {"role": "assistant", "content": self.server.args.default}

    def log_message(self, fmt, *args):
        print(fmt % args, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="0.0.0.0")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument("--script", help="JSON list of {match, message}")
    p.add_argument("--model", action="append", default=[], help="a model name /api/tags lists")
    p.add_argument("--default", default="No action is needed.", help="reply when nothing matches")
    p.add_argument("--log", default="/dev/null", help="append every request here (JSON lines)")
    args = p.parse_args()
    server = ThreadingHTTPServer((args.listen, args.port), Stub)
    server.args = args
    server.script = []
    if args.script:
        with open(args.script, encoding="utf-8") as f:
            server.script = json.load(f)
    server.serve_forever()


if __name__ == "__main__":
    main()
