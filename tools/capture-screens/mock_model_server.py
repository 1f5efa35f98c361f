#!/usr/bin/env python3
"""A scripted mock model server for capturing agent CLI screens offline.

Python 3.11 standard library only. Listens on 127.0.0.1 only and never opens a
connection anywhere.

It speaks, with streaming (server-sent events):
  * Anthropic Messages          POST /v1/messages            (Claude Code)
  * OpenAI Responses            POST /v1/responses           (Codex CLI)
  * Gemini generateContent      POST /v1beta/models/<m>:streamGenerateContent?alt=sse
                                and :generateContent, :countTokens (Gemini CLI)
  * OpenAI Chat Completions     POST /v1/chat/completions    (aider, via litellm)

The script, the same for every API (the server keeps no state: it looks at the
conversation it is sent):
  1. The latest user turn is a tool result  -> final text reply FINAL_REPLY
     ("All done: created made-by-agent.txt").
  2. The latest user text mentions "made-by-agent" -> a tool call that runs
     TOOL_COMMAND ("touch made-by-agent.txt") with the description "create a file".
     For aider (no tools) the reply is text with the command in a ```bash block,
     which aider offers to run.
  3. Anything else -> the text reply HELLO_REPLY ("Hello from the mock model.").
  Side requests (no tools offered: titles, topic checks, next-speaker checks) get a
  short answer of the shape the CLI expects.

Delay: with --delay S (or at run time: GET /_mock/delay?s=S) the server sleeps S
seconds before each streamed event, so a busy screen (spinner) stays up long enough to
capture. GET /_mock/health answers "ok".

Every request is logged as one JSON line to --log (default stderr) with its path and a
short summary, to see what a new CLI version asks for.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOOL_COMMAND = "touch made-by-agent.txt"
TOOL_DESCRIPTION = "create a file"
FINAL_REPLY = "All done: created made-by-agent.txt"
HELLO_REPLY = "Hello from the mock model."
TRIGGER = "made-by-agent"

STATE = {"delay": 0.0}
LOG_LOCK = threading.Lock()
LOG_FILE = sys.stderr


def log(entry: dict) -> None:
    entry = {"t": round(time.time(), 3), **entry}
    with LOG_LOCK:
        LOG_FILE.write(json.dumps(entry) + "\n")
        LOG_FILE.flush()


def chunks(text: str, n: int = 4) -> list[str]:
    """Splits text into about n pieces (word boundaries), so it streams in parts."""
    words = text.split(" ")
    size = max(1, -(-len(words) // n))
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


def text_of(content) -> str:
    """All text in an Anthropic/OpenAI content value (string or list of blocks)."""
    if isinstance(content, str):
        return content
    out = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                for key in ("text", "content", "input_text"):
                    if isinstance(block.get(key), str):
                        out.append(block[key])
            elif isinstance(block, str):
                out.append(block)
    return "\n".join(out)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-model/1"

    # ---- plumbing -------------------------------------------------------------
    def log_message(self, fmt, *args):  # silence the default stderr access log
        pass

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return {}

    def send_json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def sse(self, data, event: str | None = None):
        if STATE["delay"]:
            time.sleep(STATE["delay"])
        msg = ""
        if event:
            msg += f"event: {event}\n"
        msg += "data: " + (data if isinstance(data, str) else json.dumps(data)) + "\n\n"
        self.wfile.write(msg.encode())
        self.wfile.flush()

    # ---- routing --------------------------------------------------------------
    def do_GET(self):
        url = urlparse(self.path)
        log({"method": "GET", "path": self.path})
        if url.path == "/_mock/health":
            return self.send_json({"ok": True})
        if url.path == "/_mock/delay":
            STATE["delay"] = float(parse_qs(url.query).get("s", ["0"])[0])
            return self.send_json({"delay": STATE["delay"]})
        if url.path.rstrip("/").endswith("/models"):
            return self.send_json(
                {
                    "object": "list",
                    "data": [{"id": "mock-model", "object": "model", "owned_by": "mock"}],
                    "models": [],
                }
            )
        self.send_json({"error": {"message": f"mock: no GET {url.path}"}}, 404)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        url = urlparse(self.path)
        body = self.read_json()
        path = url.path
        try:
            if path.endswith("/messages/count_tokens"):
                log({"method": "POST", "path": self.path})
                return self.send_json({"input_tokens": 100})
            if path.endswith("/messages"):
                return self.anthropic(body)
            if path.endswith("/responses"):
                return self.openai_responses(body)
            if path.endswith("/chat/completions"):
                return self.openai_chat(body)
            if ":streamGenerateContent" in path or ":generateContent" in path:
                return self.gemini(body, stream=":streamGenerateContent" in path)
            if ":countTokens" in path:
                log({"method": "POST", "path": self.path})
                return self.send_json({"totalTokens": 100})
        except (BrokenPipeError, ConnectionResetError):
            log({"path": self.path, "note": "client went away"})
            return
        log({"method": "POST", "path": self.path, "note": "unknown path"})
        self.send_json({"error": {"message": f"mock: no POST {path}"}}, 404)

    # ---- Anthropic Messages ------------------------------------------------------
    def anthropic(self, body):
        messages = body.get("messages") or []
        tools = [t.get("name") for t in body.get("tools") or []]
        last = messages[-1] if messages else {}
        content = last.get("content")
        is_tool_result = isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        )
        user_text = text_of(content)
        if is_tool_result:
            action = "final"
        elif TRIGGER in user_text and "Bash" in tools:
            action = "tool"
        elif tools:
            action = "hello"
        else:
            action = "side"
        log(
            {
                "api": "anthropic",
                "path": self.path,
                "model": body.get("model"),
                "stream": body.get("stream"),
                "tools": len(tools),
                "messages": len(messages),
                "action": action,
                "last_user": user_text[-200:],
            }
        )
        model = body.get("model", "mock-model")
        msg_id = "msg_" + uuid.uuid4().hex[:20]
        usage = {"input_tokens": 100, "output_tokens": 10}
        if action == "tool":
            blocks = [
                {"type": "text", "text": "I'll create the file."},
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:20],
                    "name": "Bash",
                    "input": {"command": TOOL_COMMAND, "description": TOOL_DESCRIPTION},
                },
            ]
            stop = "tool_use"
        else:
            text = {"final": FINAL_REPLY, "hello": HELLO_REPLY}.get(action, "Mock")
            blocks = [{"type": "text", "text": text}]
            stop = "end_turn"
        if not body.get("stream"):
            return self.send_json(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        self.start_sse()
        self.sse(
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 100, "output_tokens": 1},
                },
            },
            "message_start",
        )
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                self.sse(
                    {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                    "content_block_start",
                )
                for piece in chunks(block["text"]):
                    self.sse(
                        {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}},
                        "content_block_delta",
                    )
            else:
                self.sse(
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                    },
                    "content_block_start",
                )
                self.sse(
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                    },
                    "content_block_delta",
                )
            self.sse({"type": "content_block_stop", "index": i}, "content_block_stop")
        self.sse(
            {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 10}},
            "message_delta",
        )
        self.sse({"type": "message_stop"}, "message_stop")

    # ---- OpenAI Responses -------------------------------------------------------
    def openai_responses(self, body):
        items = body.get("input") or []
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        tools = [t.get("name") or (t.get("function") or {}).get("name") for t in body.get("tools") or []]
        last = items[-1] if items else {}
        last_user = ""
        for it in reversed(items):
            if it.get("role") == "user":
                last_user = text_of(it.get("content"))
                break
        if last.get("type") == "function_call_output":
            action = "final"
        elif TRIGGER in last_user and "exec_command" in tools:
            action = "tool"
        elif tools:
            action = "hello"
        else:
            action = "side"
        log(
            {
                "api": "responses",
                "path": self.path,
                "model": body.get("model"),
                "stream": body.get("stream"),
                "tools": tools,
                "items": len(items),
                "last_type": last.get("type"),
                "action": action,
                "last_user": last_user[-200:],
            }
        )
        resp_id = "resp_" + uuid.uuid4().hex[:20]
        model = body.get("model", "mock-model")
        usage = {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 110,
        }
        base = {"id": resp_id, "object": "response", "created_at": int(time.time()), "model": model}
        outputs = []
        if action == "tool":
            outputs.append(
                {
                    "type": "function_call",
                    "id": "fc_" + uuid.uuid4().hex[:20],
                    "call_id": "call_" + uuid.uuid4().hex[:20],
                    "name": "exec_command",
                    "arguments": json.dumps(
                        {
                            "cmd": TOOL_COMMAND,
                            "sandbox_permissions": "require_escalated",
                            "justification": TOOL_DESCRIPTION,
                        }
                    ),
                    "status": "completed",
                }
            )
        else:
            text = {"final": FINAL_REPLY, "hello": HELLO_REPLY}.get(action, "Mock")
            outputs.append(
                {
                    "type": "message",
                    "id": "msg_" + uuid.uuid4().hex[:20],
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            )
        if not body.get("stream"):
            return self.send_json({**base, "status": "completed", "output": outputs, "usage": usage})
        self.start_sse()
        seq = iter(range(10_000))
        self.sse({"type": "response.created", "sequence_number": next(seq), "response": {**base, "status": "in_progress", "output": []}}, "response.created")
        for idx, item in enumerate(outputs):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                started = {**item, "status": "in_progress", "content": []}
                self.sse({"type": "response.output_item.added", "sequence_number": next(seq), "output_index": idx, "item": started}, "response.output_item.added")
                self.sse(
                    {
                        "type": "response.content_part.added",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": idx,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    },
                    "response.content_part.added",
                )
                for piece in chunks(text):
                    self.sse(
                        {
                            "type": "response.output_text.delta",
                            "sequence_number": next(seq),
                            "item_id": item["id"],
                            "output_index": idx,
                            "content_index": 0,
                            "delta": piece,
                        },
                        "response.output_text.delta",
                    )
                self.sse(
                    {
                        "type": "response.output_text.done",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": idx,
                        "content_index": 0,
                        "text": text,
                    },
                    "response.output_text.done",
                )
            else:
                self.sse({"type": "response.output_item.added", "sequence_number": next(seq), "output_index": idx, "item": {**item, "arguments": ""}}, "response.output_item.added")
            self.sse({"type": "response.output_item.done", "sequence_number": next(seq), "output_index": idx, "item": item}, "response.output_item.done")
        self.sse(
            {"type": "response.completed", "sequence_number": next(seq), "response": {**base, "status": "completed", "output": outputs, "usage": usage}},
            "response.completed",
        )

    # ---- Gemini -------------------------------------------------------------
    def gemini(self, body, stream: bool):
        contents = body.get("contents") or []
        decls = []
        for t in body.get("tools") or []:
            decls += [d.get("name") for d in t.get("functionDeclarations") or []]
        last = contents[-1] if contents else {}
        parts = last.get("parts") or []
        user_text = "\n".join(p.get("text", "") for p in parts if isinstance(p, dict))
        gen = body.get("generationConfig") or {}
        wants_json = gen.get("responseMimeType") == "application/json"
        if any(isinstance(p, dict) and "functionResponse" in p for p in parts):
            action = "final"
        elif wants_json:
            action = "json"
        elif TRIGGER in user_text and "run_shell_command" in decls:
            action = "tool"
        elif decls:
            action = "hello"
        else:
            action = "side"
        model = self.path.split("/models/")[-1].split(":")[0]
        log(
            {
                "api": "gemini",
                "path": self.path,
                "stream": stream,
                "tools": len(decls),
                "contents": len(contents),
                "action": action,
                "last_user": user_text[-200:],
            }
        )
        usage = {"promptTokenCount": 100, "candidatesTokenCount": 10, "totalTokenCount": 110}
        if action == "json":
            # next-speaker / routing checks: "the user speaks next" ends the turn.
            answer = json.dumps({"reasoning": "The model answered; the user speaks next.", "next_speaker": "user"})
            pieces = [[{"text": answer}]]
        elif action == "tool":
            pieces = [
                [
                    {
                        "functionCall": {
                            "name": "run_shell_command",
                            "args": {"command": TOOL_COMMAND, "description": TOOL_DESCRIPTION},
                        }
                    }
                ]
            ]
        else:
            text = {"final": FINAL_REPLY, "hello": HELLO_REPLY}.get(action, "Mock")
            pieces = [[{"text": p}] for p in chunks(text)]

        def resp(parts, finish):
            cand = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                cand["finishReason"] = "STOP"
            return {"candidates": [cand], "usageMetadata": usage, "modelVersion": model}

        if not stream:
            allparts = [p for ps in pieces for p in ps]
            if action != "tool":
                allparts = [{"text": "".join(p["text"] for p in allparts)}]
            return self.send_json(resp(allparts, True))
        self.start_sse()
        for i, ps in enumerate(pieces):
            self.sse(resp(ps, i == len(pieces) - 1))

    # ---- OpenAI Chat Completions ------------------------------------------------------
    def openai_chat(self, body):
        messages = body.get("messages") or []
        last_user = ""
        for m in reversed(messages):
            if m.get("role") == "user":
                last_user = text_of(m.get("content"))
                break
        last = messages[-1] if messages else {}
        tools = body.get("tools") or []
        if last.get("role") == "tool":
            action = "final"
        elif TRIGGER in last_user:
            action = "suggest"
        else:
            action = "hello"
        log(
            {
                "api": "chat",
                "path": self.path,
                "model": body.get("model"),
                "stream": body.get("stream"),
                "tools": len(tools),
                "messages": len(messages),
                "action": action,
                "last_user": last_user[-200:],
            }
        )
        if action == "suggest":
            # aider has no tool calls: it offers to run shell commands it finds in
            # ```bash blocks of the reply.
            text = f"I'll create the file with this command:\n\n```bash\n{TOOL_COMMAND}\n```\n"
        else:
            text = {"final": FINAL_REPLY, "hello": HELLO_REPLY}[action]
        cid = "chatcmpl-" + uuid.uuid4().hex[:20]
        model = body.get("model", "mock-model")
        usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
        if not body.get("stream"):
            return self.send_json(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        self.start_sse()

        def chunk(delta, finish=None, **extra):
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }

        self.sse(chunk({"role": "assistant", "content": ""}))
        for line in text.splitlines(keepends=True):
            self.sse(chunk({"content": line}))
        self.sse(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            self.sse({**chunk({}), "choices": [], "usage": usage})
        self.sse("[DONE]")


def main():
    global LOG_FILE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to sleep before each streamed event")
    ap.add_argument("--log", help="append one JSON line per request here (default stderr)")
    args = ap.parse_args()
    STATE["delay"] = args.delay
    if args.log:
        LOG_FILE = open(args.log, "a", buffering=1)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    log({"note": f"listening on 127.0.0.1:{args.port}", "delay": args.delay})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
