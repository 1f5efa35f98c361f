#!/usr/bin/env python3
"""Self-test of mock_llm.py (Python standard library only).

    python3 tools/mock-llm/test_mock_llm.py        # or: python3 -m unittest discover tools/mock-llm

Starts the server with --port 0 in a child process and talks HTTP to it: every API
(streaming and not), the default conversation, scripts (tag, --script, posted at run
time, parallel calls, generic tools, usage), the request log, every fault (and the
usage-limit presets), the fidelity conversation on every API, and --jitter.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER = HERE / "mock_llm.py"


def start_server(*args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", "0", "--log", "/dev/null", *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on 127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"unexpected first line {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


class Client:
    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body=None, timeout: float = 10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        try:
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        return resp.status, dict(resp.getheaders()), raw

    def json(self, method: str, path: str, body=None, **kw):
        status, headers, raw = self.request(method, path, body, **kw)
        return status, headers, json.loads(raw) if raw else None

    def sse(self, path: str, body) -> list:
        """The `data:` payloads of a streamed answer (JSON-decoded where they are JSON)."""
        status, headers, raw = self.request("POST", path, body)
        assert status == 200, (status, raw)
        assert headers.get("Content-Type") == "text/event-stream", headers
        out = []
        for line in raw.decode().splitlines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                try:
                    out.append(json.loads(payload))
                except json.JSONDecodeError:
                    out.append(payload)
        return out


BASH = {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {}, "description": {}}}}
EXEC = {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {}}}}
SHELL_DECL = {"functionDeclarations": [{"name": "run_shell_command", "parameters": {"type": "object"}}]}
CHAT_SHELL = {
    "type": "function",
    "function": {"name": "shell", "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}},
}


def anthropic(messages, stream=True, tools=(BASH,)):
    return {"model": "claude-test", "stream": stream, "max_tokens": 100, "tools": list(tools), "messages": messages}


def anthropic_stream_blocks(events) -> list:
    """Reassembles the content blocks of an Anthropic stream."""
    blocks = {}
    for e in events:
        if e["type"] == "content_block_start":
            blocks[e["index"]] = dict(e["content_block"], _json="")
        elif e["type"] == "content_block_delta":
            d = e["delta"]
            if d["type"] == "text_delta":
                blocks[e["index"]]["text"] += d["text"]
            else:
                blocks[e["index"]]["_json"] += d["partial_json"]
    out = []
    for i in sorted(blocks):
        b = blocks[i]
        if b["type"] == "tool_use":
            b["input"] = json.loads(b["_json"])
        del b["_json"]
        out.append(b)
    return out


class MockLLMTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_server()
        cls.c = Client(cls.port)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.proc.stdout.close()

    def setUp(self):
        self.c.request("DELETE", "/_mock/faults")
        self.c.request("DELETE", "/_mock/requests")

    # ---- control ----
    def test_health_and_port(self):
        status, _, body = self.c.json("GET", "/_mock/health")
        self.assertEqual(status, 200)
        self.assertEqual(body, {"ok": True, "port": self.port})

    def test_request_log(self):
        self.c.json("POST", "/v1/messages", anthropic([{"role": "user", "content": "hi"}], stream=False))
        self.c.json("POST", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        _, _, log = self.c.json("GET", "/_mock/requests")
        self.assertEqual(log["count"], 2)
        self.assertEqual(log["paths"], ["/v1/messages", "/v1/chat/completions"])
        self.assertEqual([r["api"] for r in log["requests"]], ["anthropic", "chat"])
        _, _, log = self.c.json("GET", "/_mock/requests?bodies=1")
        self.assertEqual(log["requests"][0]["body"]["messages"][0]["content"], "hi")
        self.c.request("DELETE", "/_mock/requests")
        self.assertEqual(self.c.json("GET", "/_mock/requests")[2]["count"], 0)

    # ---- Anthropic ----
    def test_anthropic_default_hello_and_tool(self):
        events = self.c.sse("/v1/messages?beta=true", anthropic([{"role": "user", "content": "Say hello"}]))
        types = [e["type"] for e in events]
        self.assertEqual(types[0], "message_start")
        self.assertEqual(types[-2:], ["message_delta", "message_stop"])
        self.assertEqual(anthropic_stream_blocks(events), [{"type": "text", "text": "Hello from the mock model."}])

        events = self.c.sse("/v1/messages", anthropic([{"role": "user", "content": "create made-by-agent.txt"}]))
        blocks = anthropic_stream_blocks(events)
        self.assertEqual(blocks[0]["text"], "I'll create the file.")
        self.assertEqual(blocks[1]["name"], "Bash")
        self.assertEqual(blocks[1]["input"], {"command": "touch made-by-agent.txt", "description": "create a file"})
        self.assertEqual(events[-2]["delta"]["stop_reason"], "tool_use")

        msgs = [
            {"role": "user", "content": "create made-by-agent.txt"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
        ]
        _, _, body = self.c.json("POST", "/v1/messages", anthropic(msgs, stream=False))
        self.assertEqual(body["content"], [{"type": "text", "text": "All done: created made-by-agent.txt"}])
        self.assertEqual(body["stop_reason"], "end_turn")

    def test_anthropic_side_request_and_count_tokens(self):
        _, _, body = self.c.json("POST", "/v1/messages", anthropic([{"role": "user", "content": "[script:autonomy] x"}], False, ()))
        self.assertEqual(body["content"][0]["text"], "Mock")
        _, _, body = self.c.json("POST", "/v1/messages/count_tokens", {"messages": [{"role": "user", "content": "x" * 40}]})
        self.assertEqual(body, {"input_tokens": 10})

    def test_anthropic_script_usage_and_refusal_advances(self):
        prompt = {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                              {"type": "text", "text": "[script:autonomy] Do it"}]}
        _, _, body = self.c.json("POST", "/v1/messages", anthropic([prompt], stream=False))
        self.assertEqual(body["content"][0]["input"]["command"], "touch made-by-agent.txt")
        self.assertEqual(body["usage"], {"input_tokens": 1200, "cache_creation_input_tokens": 0,
                                         "cache_read_input_tokens": 0, "output_tokens": 40})
        call = {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]}
        # Claude Code sends a refused call back as an error result, next to the person's new prompt.
        refused = {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": "The user doesn't want to proceed"},
            {"type": "text", "text": "go on"}]}
        _, _, body = self.c.json("POST", "/v1/messages", anthropic([prompt, call, refused], stream=False))
        self.assertEqual(body["content"][0]["input"]["command"], "npm install left-pad")
        events = self.c.sse("/v1/messages", anthropic([prompt, call, refused, call, refused]))
        self.assertEqual(anthropic_stream_blocks(events), [{"type": "text", "text": "All done."}])
        self.assertEqual(events[0]["message"]["usage"]["input_tokens"], 1400)
        self.assertEqual(events[-2]["usage"]["output_tokens"], 20)
        _, _, body = self.c.json("POST", "/v1/messages", anthropic([prompt, call, refused, call, refused, call, refused], stream=False))
        self.assertIn("script autonomy has ended", body["content"][0]["text"])

    def test_default_usage_is_deterministic(self):
        msgs = [{"role": "user", "content": "y" * 400}]
        _, _, a = self.c.json("POST", "/v1/messages", anthropic(msgs, False, ()))
        _, _, b = self.c.json("POST", "/v1/messages", anthropic(msgs, False, ()))
        self.assertEqual(a["usage"], b["usage"])
        self.assertEqual(a["usage"]["input_tokens"], 100)
        self.assertEqual(a["usage"]["output_tokens"], 10)

    # ---- OpenAI Chat Completions ----
    def test_chat_without_tools_suggests_a_bash_block(self):
        _, _, body = self.c.json("POST", "/v1/chat/completions",
                                 {"model": "m", "messages": [{"role": "user", "content": "make made-by-agent.txt"}]})
        text = body["choices"][0]["message"]["content"]
        self.assertIn("```bash\ntouch made-by-agent.txt\n```", text)
        self.assertEqual(body["usage"]["completion_tokens"], 10)

    def test_chat_tool_calls_streaming_and_not(self):
        msgs = [{"role": "user", "content": "[script:permissions] go"}]
        _, _, body = self.c.json("POST", "/v1/chat/completions", {"model": "m", "tools": [CHAT_SHELL], "messages": msgs})
        choice = body["choices"][0]
        self.assertEqual(choice["finish_reason"], "tool_calls")
        fn = choice["message"]["tool_calls"][0]["function"]
        self.assertEqual(fn["name"], "shell")
        self.assertEqual(json.loads(fn["arguments"]), {"command": ["bash", "-lc", "touch made-by-agent.txt"]})

        msgs += [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": fn}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ]
        events = self.c.sse("/v1/chat/completions", {"model": "m", "stream": True, "tools": [CHAT_SHELL], "messages": msgs,
                                                     "stream_options": {"include_usage": True}})
        self.assertEqual(events[-1], "[DONE]")
        args = "".join(tc["function"].get("arguments", "")
                       for e in events[:-1] for ch in e["choices"] for tc in ch["delta"].get("tool_calls", []))
        self.assertEqual(json.loads(args)["command"][2], "npm install left-pad")
        self.assertEqual([ch["finish_reason"] for e in events[:-1] for ch in e["choices"] if ch["finish_reason"]], ["tool_calls"])
        self.assertIn("usage", events[-2])

    # ---- OpenAI Responses ----
    def test_responses_exec_command_asks_for_escalation(self):
        body = {"model": "m", "stream": True, "tools": [EXEC],
                "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "[script:autonomy] go"}]}]}
        events = self.c.sse("/v1/responses", body)
        self.assertEqual(events[0]["type"], "response.created")
        self.assertEqual(events[-1]["type"], "response.completed")
        item = next(e["item"] for e in events if e["type"] == "response.output_item.done")
        self.assertEqual(item["type"], "function_call")
        self.assertEqual(item["name"], "exec_command")
        self.assertEqual(json.loads(item["arguments"]), {"cmd": "touch made-by-agent.txt",
                                                         "sandbox_permissions": "require_escalated",
                                                         "justification": "create a file"})
        self.assertEqual(events[-1]["response"]["usage"]["input_tokens"], 1200)
        body["input"] += [item, {"type": "function_call_output", "call_id": item["call_id"], "output": "aborted by user"},
                          {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<turn_aborted>"}]},
                          {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go on"}]}]
        events = self.c.sse("/v1/responses", body)
        item = next(e["item"] for e in events if e["type"] == "response.output_item.done")
        self.assertEqual(json.loads(item["arguments"])["cmd"], "npm install left-pad")
        body["stream"] = False
        body["input"] += [item, {"type": "function_call_output", "call_id": item["call_id"], "output": "x"}]
        _, _, resp = self.c.json("POST", "/v1/responses", body)
        self.assertEqual(resp["output"][0]["content"][0]["text"], "All done.")

    # ---- Gemini ----
    def test_gemini_stream_generate_count(self):
        contents = [{"role": "user", "parts": [{"text": "[script:permissions] go"}]}]
        events = self.c.sse("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                            {"contents": contents, "tools": [SHELL_DECL]})
        call = events[0]["candidates"][0]["content"]["parts"][0]["functionCall"]
        self.assertEqual(call, {"name": "run_shell_command", "args": {"command": "touch made-by-agent.txt",
                                                                      "description": "create a file"}})
        self.assertEqual(events[-1]["candidates"][0]["finishReason"], "STOP")
        self.assertIn("promptTokenCount", events[0]["usageMetadata"])
        _, _, body = self.c.json("POST", "/v1beta/models/gemini-2.5-flash:generateContent",
                                 {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}], "tools": [SHELL_DECL]})
        self.assertEqual(body["candidates"][0]["content"]["parts"], [{"text": "Hello from the mock model."}])
        _, _, body = self.c.json("POST", "/v1beta/models/gemini-2.5-flash:countTokens", {"contents": contents})
        self.assertEqual(body, {"totalTokens": len("[script:permissions] go") // 4})
        _, _, body = self.c.json("POST", "/v1beta/models/gemini-2.5-flash-lite:generateContent",
                                 {"contents": contents, "generationConfig": {"responseMimeType": "application/json"}})
        self.assertEqual(json.loads(body["candidates"][0]["content"]["parts"][0]["text"])["next_speaker"], "user")

    def test_gemini_refusal_drops_history_but_the_script_advances(self):
        tag = {"role": "user", "parts": [{"text": "[script:permissions] go"}]}
        call = {"role": "model", "parts": [{"functionCall": {"name": "run_shell_command", "args": {}}}]}
        result = {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command", "response": {}}}]}
        go_on = {"role": "user", "parts": [{"text": "go on"}]}
        path = "/v1beta/models/m:generateContent"
        # Turn 1 (npm) was refused: Gemini CLI dropped turn 0's result and turn 1's call.
        _, _, body = self.c.json("POST", path, {"contents": [tag, call, go_on], "tools": [SHELL_DECL]})
        self.assertIn("This is a long command line", body["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["command"])
        _, _, body = self.c.json("POST", path, {"contents": [tag, call, result], "tools": [SHELL_DECL]})
        self.assertEqual(body["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["command"], "npm install left-pad")
        # Turn 0 was refused: the call is gone and "go on" joins the first message.
        ctx = {"text": "<session_context>...</session_context>"}
        first = {"role": "user", "parts": [ctx, {"text": "[script:permissions] go"}, {"text": "go on"}]}
        _, _, body = self.c.json("POST", path, {"contents": [first], "tools": [SHELL_DECL]})
        self.assertEqual(body["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["command"], "npm install left-pad")
        first = {"role": "user", "parts": [ctx, {"text": "[script:permissions] go"}]}
        _, _, body = self.c.json("POST", path, {"contents": [first], "tools": [SHELL_DECL]})
        self.assertEqual(body["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["command"], "touch made-by-agent.txt")

    # ---- scripts ----
    def test_scripts_posted_parallel_calls_generic_tool_and_errors(self):
        script = {"turns": [
            {"say": "Two at once.", "calls": [{"shell": "touch a"}, {"tool": "Write", "input": {"file_path": "/x", "content": "y"}}]},
            {"text": "done", "usage": {"input_tokens": 7, "output_tokens": 3, "cache_read_tokens": 5, "cache_creation_tokens": 2}},
        ]}
        status, _, body = self.c.json("POST", "/_mock/scripts/two", script)
        self.assertEqual((status, body["turns"]), (200, 2))
        first = [{"role": "user", "content": "[script:two] go"}]
        _, _, body = self.c.json("POST", "/v1/messages", anthropic(first, stream=False))
        self.assertEqual([b["type"] for b in body["content"]], ["text", "tool_use", "tool_use"])
        self.assertEqual(body["content"][1]["input"], {"command": "touch a"})
        self.assertEqual(body["content"][2]["name"], "Write")
        ids = [b["id"] for b in body["content"][1:]]
        msgs = first + [{"role": "assistant", "content": body["content"]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in ids]}]
        _, _, body = self.c.json("POST", "/v1/messages", anthropic(msgs, stream=False))
        self.assertEqual(body["content"][0]["text"], "done")
        self.assertEqual(body["usage"], {"input_tokens": 7, "cache_creation_input_tokens": 2,
                                         "cache_read_input_tokens": 5, "output_tokens": 3})
        self.assertEqual(self.c.json("GET", "/_mock/scripts/two")[2]["turns"][1]["text"], "done")

        status, _, body = self.c.json("POST", "/_mock/scripts/bad", {"turns": [{"shell": "x", "text": "y"}]})
        self.assertEqual(status, 400)
        _, _, body = self.c.json("POST", "/v1/messages", anthropic([{"role": "user", "content": "[script:nosuch] go"}], stream=False))
        self.assertIn("no script named 'nosuch'", body["content"][0]["text"])

    def test_default_script_set_at_run_time(self):
        self.c.json("POST", "/_mock/script", {"name": "autonomy"})
        try:
            _, _, body = self.c.json("POST", "/v1/messages", anthropic([{"role": "user", "content": "no tag"}], stream=False))
            self.assertEqual(body["content"][0]["input"]["command"], "touch made-by-agent.txt")
        finally:
            self.c.json("POST", "/_mock/script", {"name": None})
        _, _, body = self.c.json("POST", "/v1/messages", anthropic([{"role": "user", "content": "no tag"}], stream=False))
        self.assertEqual(body["content"][0]["text"], "Hello from the mock model.")

    # ---- faults ----
    def test_fault_status_times_and_path(self):
        _, _, body = self.c.json("POST", "/_mock/faults", [{"path": "/v1/chat/completions", "status": 500, "times": 3}])
        self.assertEqual(body["faults"][0]["times_left"], 3)
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        # Another path is not affected.
        self.assertEqual(self.c.request("POST", "/v1/messages", anthropic([{"role": "user", "content": "hi"}], False))[0], 200)
        for _ in range(3):
            status, _, body = self.c.json("POST", "/v1/chat/completions", chat)
            self.assertEqual(status, 500)
            self.assertIn("injected fault 500", body["error"]["message"])
        self.assertEqual(self.c.request("POST", "/v1/chat/completions", chat)[0], 200)
        _, _, log = self.c.json("GET", "/_mock/requests")
        self.assertEqual([r["status"] for r in log["requests"]], [200, 500, 500, 500, 200])
        self.assertEqual([r.get("fault") for r in log["requests"]], [None, 0, 0, 0, None])

    def test_fault_rate_limit_with_retry_after_per_api(self):
        self.c.json("POST", "/_mock/faults", {"status": 429, "retry_after": 2, "skip": 1, "times": 1})
        msgs = anthropic([{"role": "user", "content": "hi"}], stream=False)
        self.assertEqual(self.c.request("POST", "/v1/messages", msgs)[0], 200)  # skipped
        status, headers, raw = self.c.request("POST", "/v1/messages", msgs)
        self.assertEqual(status, 429)
        self.assertEqual(headers["Retry-After"], "2")
        self.assertEqual(json.loads(raw)["error"]["type"], "rate_limit_error")
        self.assertEqual(self.c.request("POST", "/v1/messages", msgs)[0], 200)
        self.c.json("POST", "/_mock/faults", {"api": "gemini", "status": 429})
        status, _, body = self.c.json("POST", "/v1beta/models/m:generateContent", {"contents": []})
        self.assertEqual((status, body["error"]["status"]), (429, "RESOURCE_EXHAUSTED"))

    def test_fault_hang(self):
        self.c.json("POST", "/_mock/faults", {"hang_s": 1.5, "times": 1})
        t0 = time.monotonic()
        status, _, _ = self.c.request("POST", "/v1/chat/completions", {"model": "m", "messages": []})
        self.assertEqual(status, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 1.4)
        with self.assertRaises(TimeoutError):
            self.c.json("POST", "/_mock/faults", {"hang_s": 5, "times": 1})
            self.c.request("POST", "/v1/chat/completions", {"model": "m", "messages": []}, timeout=0.5)

    def test_fault_malformed(self):
        self.c.json("POST", "/_mock/faults", {"malformed": True, "times": 2})
        status, _, raw = self.c.request("POST", "/v1/messages", anthropic([], stream=False))
        self.assertEqual(status, 200)
        with self.assertRaises(json.JSONDecodeError):
            json.loads(raw)
        events = self.c.sse("/v1/messages", anthropic([]))
        self.assertTrue(all(isinstance(e, str) for e in events), events)

    def test_fault_truncated_stream_and_delete(self):
        self.c.json("POST", "/_mock/faults", {"truncate_stream_after": 2})
        events = self.c.sse("/v1/messages", anthropic([{"role": "user", "content": "hi"}]))
        self.assertEqual([e["type"] for e in events], ["message_start", "content_block_start"])
        # The server notes the truncation after closing the connection: give it a moment.
        deadline = time.monotonic() + 2
        while True:
            _, _, log = self.c.json("GET", "/_mock/requests")
            if log["requests"] and log["requests"][-1].get("note") or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.assertEqual(log["requests"][-1]["note"], "stream truncated")
        self.assertEqual(self.c.json("GET", "/_mock/faults")[2]["faults"][0]["hits"], 1)
        self.c.request("DELETE", "/_mock/faults")
        events = self.c.sse("/v1/messages", anthropic([{"role": "user", "content": "hi"}]))
        self.assertEqual(events[-1]["type"], "message_stop")

    def test_bad_fault_rule_is_refused(self):
        status, _, body = self.c.json("POST", "/_mock/faults", {"stauts": 500})
        self.assertEqual(status, 400)
        self.assertIn("stauts", body["error"]["message"])


FID_USAGE = lambda tok: {"input_tokens": 1000 + len(tok), "output_tokens": 20, "cache_read_tokens": 300, "cache_creation_tokens": 50}
GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"
GEMINI_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def responses_text(events) -> str:
    return "".join(e["delta"] for e in events if isinstance(e, dict) and e.get("type") == "response.output_text.delta")


def gemini_stream_text(events) -> str:
    return "".join(p.get("text", "") for e in events for p in e["candidates"][0]["content"]["parts"])


class FidelityTest(unittest.TestCase):
    """The fidelity conversation: FIDELITY <kind> <token> in the latest tagged user prompt."""

    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_server()
        cls.c = Client(cls.port)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.proc.stdout.close()

    def setUp(self):
        self.c.request("DELETE", "/_mock/faults")
        self.c.request("DELETE", "/_mock/requests")

    def last_log(self):
        return self.c.json("GET", "/_mock/requests")[2]["requests"][-1]

    # ---- Anthropic (Claude Code) ----
    def test_anthropic(self):
        # Claude Code 2.1.197 sends a system-reminder block before the prompt, and a
        # role "system" message inside `messages`.
        def prompt(text):
            return {"role": "user", "content": [{"type": "text", "text": "<system-reminder>\ncontext\n</system-reminder>"},
                                                {"type": "text", "text": text}]}
        agents = {"role": "system", "content": "Available agent types for the Agent tool: ..."}

        tok = "tok-reply0001"
        events = self.c.sse("/v1/messages?beta=true", anthropic([prompt(f"FIDELITY reply {tok}"), agents]))
        self.assertEqual(anthropic_stream_blocks(events), [{"type": "text", "text": f"all done {tok}"}])
        self.assertEqual(len([e for e in events if e["type"] == "content_block_delta"]), 3)  # streamed in pieces
        self.assertEqual(events[0]["message"]["usage"], {"input_tokens": 1013, "cache_creation_input_tokens": 50,
                                                         "cache_read_input_tokens": 300, "output_tokens": 1})
        self.assertEqual(events[-2]["usage"], {"output_tokens": 20})
        log = self.last_log()
        self.assertEqual((log["action"], log["token"], log["usage"]), ("fidelity-reply-text", tok, FID_USAGE(tok)))

        for kind, tok, command, desc, text, result in [
            ("echo", "tok-e1", None, None, None, None),  # too short: not a token
            ("echo", "tok-echo01", "echo tok-echo01", "print the token", "echoed tok-echo01", "tok-echo01"),
            ("touch", "tok-touch01", "touch tok-touch01.txt", "create a file", "created tok-touch01.txt", ""),
            ("wipe", "tok-wipe01", "rm -rf ~/important", "wipe", "refused tok-wipe01",
             "rm in '/home/x/important' was blocked."),
        ]:
            with self.subTest(kind=kind, tok=tok):
                first = [prompt(f"FIDELITY {kind} {tok}"), agents]
                _, _, body = self.c.json("POST", "/v1/messages", anthropic(first, stream=False))
                if command is None:
                    self.assertEqual(body["content"], [{"type": "text", "text": "Hello from the mock model."}])
                    continue
                self.assertEqual(body["stop_reason"], "tool_use")
                self.assertEqual([b["type"] for b in body["content"]], ["tool_use"])
                self.assertEqual(body["content"][0]["name"], "Bash")
                self.assertEqual(body["content"][0]["input"], {"command": command, "description": desc})
                self.assertEqual(self.last_log()["action"], f"fidelity-{kind}-call")
                call = {"role": "assistant", "content": body["content"]}
                res = {"type": "tool_result", "tool_use_id": body["content"][0]["id"], "content": result}
                if kind == "wipe":
                    # Refused interactively: an error result plus Claude Code's note.
                    res["is_error"] = True
                    answer = {"role": "user", "content": [res, {"type": "text", "text": "[Request interrupted by user for tool use]"}]}
                else:
                    answer = {"role": "user", "content": [res, {"type": "text", "text": "<system-reminder>x</system-reminder>"}]}
                events = self.c.sse("/v1/messages", anthropic(first + [call, answer]))
                self.assertEqual(anthropic_stream_blocks(events), [{"type": "text", "text": text}])
                self.assertEqual(events[-2]["delta"]["stop_reason"], "end_turn")
                self.assertEqual(events[0]["message"]["usage"]["input_tokens"], 1000 + len(tok))
                log = self.last_log()
                self.assertEqual((log["action"], log["token"]), (f"fidelity-{kind}-text", tok))

    def test_anthropic_script_then_fidelity_and_side_requests(self):
        # An older [script:...] conversation, played to its end, then a FIDELITY prompt.
        old = [{"role": "user", "content": "[script:autonomy] Do it"}]
        for i in range(2):
            old += [{"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "Bash", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"}]}]
        old += [{"role": "assistant", "content": [{"type": "text", "text": "All done."}]}]
        msgs = old + [{"role": "user", "content": "FIDELITY echo tok-after0script"}]
        _, _, body = self.c.json("POST", "/v1/messages", anthropic(msgs, stream=False))
        self.assertEqual(body["content"][0]["input"]["command"], "echo tok-after0script")
        # --script set at run time: fidelity still wins.
        self.c.json("POST", "/_mock/script", {"name": "autonomy"})
        try:
            _, _, body = self.c.json("POST", "/v1/messages", anthropic([{"role": "user", "content": "FIDELITY reply tok-abcd"}], False))
            self.assertEqual(body["content"][0]["text"], "all done tok-abcd")
        finally:
            self.c.json("POST", "/_mock/script", {"name": None})
        # A [script:] tag in a later prompt wins over an older FIDELITY prompt.
        msgs = [{"role": "user", "content": "FIDELITY reply tok-abcd"},
                {"role": "assistant", "content": "all done tok-abcd"},
                {"role": "user", "content": "[script:autonomy] go"}]
        _, _, body = self.c.json("POST", "/v1/messages", anthropic(msgs, stream=False))
        self.assertEqual(body["content"][0]["input"]["command"], "touch made-by-agent.txt")
        # Side requests stay side requests.
        _, _, body = self.c.json("POST", "/v1/messages", anthropic([{"role": "user", "content": "FIDELITY reply tok-abcd"}], False, ()))
        self.assertEqual(body["content"][0]["text"], "Mock")
        self.assertIsNone(self.last_log()["token"])
        # The latest tag in a prompt counts; a token longer than 32 characters is no token.
        _, _, body = self.c.json("POST", "/v1/messages", anthropic(
            [{"role": "user", "content": "FIDELITY reply tok-aaaa then FIDELITY reply tok-bbbb"}], False))
        self.assertEqual(body["content"][0]["text"], "all done tok-bbbb")
        _, _, body = self.c.json("POST", "/v1/messages", anthropic([{"role": "user", "content": "FIDELITY reply tok-" + "a" * 33}], False))
        self.assertEqual(body["content"][0]["text"], "Hello from the mock model.")

    # ---- OpenAI Responses (Codex) ----
    def test_responses(self):
        def user(text):
            return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        head = [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex. FIDELITY reply tok-nothere"}]},
                user("# AGENTS.md instructions for /w\n<INSTRUCTIONS>be brief</INSTRUCTIONS>"),
                user("<environment_context>\n  <cwd>/w</cwd>\n</environment_context>")]
        tok = "tok-resp0reply"
        # Codex's own user-role messages after the prompt do not hide it.
        body = {"model": "m", "stream": True, "tools": [EXEC], "input": head + [user(f"FIDELITY reply {tok}"), head[2]]}
        events = self.c.sse("/v1/responses", body)
        self.assertEqual(responses_text(events), f"all done {tok}")
        self.assertEqual([e["type"] for e in events][:3], ["response.created", "response.output_item.added", "response.content_part.added"])
        self.assertEqual(events[-1]["type"], "response.completed")
        self.assertEqual(events[-1]["response"]["usage"], {"input_tokens": 1014, "input_tokens_details": {"cached_tokens": 300},
                                                           "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
                                                           "total_tokens": 1034})
        for kind, tok, args, text, output in [
            ("echo", "tok-resp0echo", {"cmd": "echo tok-resp0echo"}, "echoed tok-resp0echo", "Output:\ntok-resp0echo\n"),
            ("touch", "tok-resp0touch", {"cmd": "touch tok-resp0touch.txt", "sandbox_permissions": "require_escalated",
                                         "justification": "create a file"}, "created tok-resp0touch.txt", "Process exited with code 0"),
            ("wipe", "tok-resp0wipe", {"cmd": "rm -rf ~/important", "sandbox_permissions": "require_escalated",
                                       "justification": "wipe"}, "refused tok-resp0wipe",
             "approval policy is Never; reject command"),
        ]:
            with self.subTest(kind=kind):
                body = {"model": "m", "stream": True, "tools": [EXEC], "input": head + [user(f"FIDELITY {kind} {tok}")]}
                events = self.c.sse("/v1/responses", body)
                item = next(e["item"] for e in events if e["type"] == "response.output_item.done")
                self.assertEqual((item["type"], item["name"]), ("function_call", "exec_command"))
                self.assertEqual(json.loads(item["arguments"]), args)
                self.assertEqual(self.last_log()["action"], f"fidelity-{kind}-call")
                body["input"] += [item, {"type": "function_call_output", "call_id": item["call_id"], "output": output}]
                if kind == "wipe":  # refused in the TUI: Codex adds its own note
                    body["input"].append(user("<turn_aborted>"))
                body["stream"] = False
                _, _, resp = self.c.json("POST", "/v1/responses", body)
                self.assertEqual(resp["output"][0]["content"][0]["text"], text)
                self.assertEqual(resp["usage"]["input_tokens"], 1000 + len(tok))
                self.assertEqual(self.last_log()["token"], tok)

    # ---- Gemini ----
    def test_gemini(self):
        ctx = {"text": "<session_context>\nThis is the Gemini CLI.\n</session_context>"}
        tok = "tok-gem0reply"
        contents = [{"role": "user", "parts": [ctx, {"text": f"FIDELITY reply {tok}"}]}]
        events = self.c.sse(GEMINI_STREAM, {"contents": contents, "tools": [SHELL_DECL]})
        self.assertEqual(gemini_stream_text(events), f"all done {tok}")
        self.assertGreater(len(events), 1)
        self.assertEqual(events[-1]["candidates"][0]["finishReason"], "STOP")
        self.assertEqual(events[0]["usageMetadata"], {"promptTokenCount": 1013, "candidatesTokenCount": 20,
                                                      "totalTokenCount": 1033, "cachedContentTokenCount": 300})
        # Its JSON checks stay JSON checks.
        _, _, body = self.c.json("POST", "/v1beta/models/gemini-2.5-flash-lite:generateContent",
                                 {"contents": contents, "generationConfig": {"responseMimeType": "application/json"}})
        self.assertEqual(json.loads(body["candidates"][0]["content"]["parts"][0]["text"])["next_speaker"], "user")
        for kind, tok, command, desc, text in [
            ("echo", "tok-gem0echo", "echo tok-gem0echo", "print the token", "echoed tok-gem0echo"),
            ("touch", "tok-gem0touch", "touch tok-gem0touch.txt", "create a file", "created tok-gem0touch.txt"),
            ("wipe", "tok-gem0wipe", "rm -rf ~/important", "wipe", "refused tok-gem0wipe"),
        ]:
            with self.subTest(kind=kind):
                contents = [{"role": "user", "parts": [ctx, {"text": f"FIDELITY {kind} {tok}"}]}]
                _, _, body = self.c.json("POST", GEMINI, {"contents": contents, "tools": [SHELL_DECL]})
                part = body["candidates"][0]["content"]["parts"][0]
                self.assertEqual(part["functionCall"], {"name": "run_shell_command", "args": {"command": command, "description": desc}})
                contents += [{"role": "model", "parts": [part]},
                             {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command", "response": {"output": "x"}}}]}]
                events = self.c.sse(GEMINI_STREAM, {"contents": contents, "tools": [SHELL_DECL]})
                self.assertEqual(gemini_stream_text(events), text)
                log = self.last_log()
                self.assertEqual((log["action"], log["token"], log["usage"]), (f"fidelity-{kind}-text", tok, FID_USAGE(tok)))

    def test_gemini_refused_call_dropped(self):
        ctx = {"text": "<session_context>...</session_context>"}
        # The refused wipe was the first call of the session: Gemini CLI dropped it and
        # added the next prompt to the first message.
        first = {"role": "user", "parts": [ctx, {"text": "FIDELITY wipe tok-gem0drop"}, {"text": "go on"}]}
        _, _, body = self.c.json("POST", GEMINI, {"contents": [first], "tools": [SHELL_DECL]})
        self.assertEqual(body["candidates"][0]["content"]["parts"], [{"text": "refused tok-gem0drop"}])
        self.assertEqual(self.last_log()["action"], "fidelity-wipe-text")
        # Later in a session: an older task, then the wipe prompt and the next prompt
        # (the refused call between them gone).
        older = [{"role": "user", "parts": [ctx, {"text": "FIDELITY reply tok-gem0old"}]},
                 {"role": "model", "parts": [{"text": "all done tok-gem0old"}]}]
        contents = older + [{"role": "user", "parts": [{"text": "FIDELITY wipe tok-gem0drop2"}]},
                            {"role": "user", "parts": [{"text": "go on"}]}]
        _, _, body = self.c.json("POST", GEMINI, {"contents": contents, "tools": [SHELL_DECL]})
        self.assertEqual(body["candidates"][0]["content"]["parts"], [{"text": "refused tok-gem0drop2"}])
        # A new FIDELITY prompt after a dropped call starts its own task.
        contents = older + [{"role": "user", "parts": [{"text": "FIDELITY wipe tok-gem0drop2"}]},
                            {"role": "user", "parts": [{"text": "FIDELITY echo tok-gem0next"}]}]
        _, _, body = self.c.json("POST", GEMINI, {"contents": contents, "tools": [SHELL_DECL]})
        self.assertEqual(body["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["command"], "echo tok-gem0next")

    # ---- Chat Completions and Ollama ----
    def test_chat_and_ollama(self):
        tok = "tok-chat0echo"
        msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": f"FIDELITY echo {tok}"}]
        _, _, body = self.c.json("POST", "/v1/chat/completions", {"model": "m", "tools": [CHAT_SHELL], "messages": msgs})
        msg = body["choices"][0]["message"]
        self.assertEqual(json.loads(msg["tool_calls"][0]["function"]["arguments"]), {"command": ["bash", "-lc", f"echo {tok}"]})
        self.assertEqual(body["usage"], {"prompt_tokens": 1013, "completion_tokens": 20, "total_tokens": 1033,
                                         "prompt_tokens_details": {"cached_tokens": 300}})
        msgs += [msg, {"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"], "content": tok}]
        events = self.c.sse("/v1/chat/completions", {"model": "m", "stream": True, "tools": [CHAT_SHELL], "messages": msgs})
        text = "".join(ch["delta"].get("content") or "" for e in events[:-1] for ch in e["choices"])
        self.assertEqual(text, f"echoed {tok}")
        self.assertEqual(self.last_log()["action"], "fidelity-echo-text")
        _, _, body = self.c.json("POST", "/api/chat", {"model": "m", "messages": [{"role": "user", "content": "FIDELITY reply tok-olla"}]})
        self.assertEqual((body["message"]["content"], body["prompt_eval_count"], body["eval_count"]), ("all done tok-olla", 1008, 20))

    # ---- usage-limit faults ----
    def test_limit_preset_per_api(self):
        _, _, body = self.c.json("POST", "/_mock/faults", {"limit": True, "reset_s": 60, "skip": 1, "times": 2, "api": "anthropic"})
        self.assertEqual(body["faults"][0]["times_left"], 2)
        msgs = anthropic([{"role": "user", "content": "FIDELITY reply tok-limit"}], stream=False)
        self.assertEqual(self.c.request("POST", "/v1/messages", msgs)[0], 200)  # skipped
        for _ in range(2):
            t0 = time.time()
            status, headers, raw = self.c.request("POST", "/v1/messages", msgs)
            self.assertEqual(status, 429)
            body = json.loads(raw)
            self.assertEqual((body["type"], body["error"]["type"]), ("error", "rate_limit_error"))
            self.assertEqual(headers["retry-after"], "60")
            self.assertEqual(headers["anthropic-ratelimit-unified-status"], "rejected")
            self.assertAlmostEqual(int(headers["anthropic-ratelimit-unified-reset"]), t0 + 60, delta=3)
        self.assertEqual(self.c.request("POST", "/v1/messages", msgs)[0], 200)  # used up
        log = self.c.json("GET", "/_mock/requests")[2]["requests"]
        self.assertEqual([(r["status"], r.get("note")) for r in log], [(200, None), (429, "usage limit"), (429, "usage limit"), (200, None)])

        self.c.json("POST", "/_mock/faults", {"limit": True, "reset_s": 90, "api": "responses", "times": 1})
        t0 = time.time()
        status, _, body = self.c.json("POST", "/v1/responses", {"model": "m", "stream": True, "tools": [EXEC], "input": "hi"})
        self.assertEqual(status, 429)
        self.assertEqual({k: body["error"][k] for k in ("type", "message", "resets_in_seconds")},
                         {"type": "usage_limit_reached", "message": "You've hit your usage limit.", "resets_in_seconds": 90})
        self.assertAlmostEqual(body["error"]["resets_at"], t0 + 90, delta=3)

        self.c.json("POST", "/_mock/faults", {"limit": True, "reset_s": 30, "api": "gemini", "times": 1})
        status, _, body = self.c.json("POST", GEMINI_STREAM, {"contents": [], "tools": [SHELL_DECL]})
        self.assertEqual(status, 429)
        err = body["error"]
        self.assertEqual((err["code"], err["status"]), (429, "RESOURCE_EXHAUSTED"))
        self.assertTrue(err["message"].startswith("Quota exceeded") and err["message"].endswith("Please retry in 30s."), err)
        self.assertEqual(err["details"], [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}])

        self.c.json("POST", "/_mock/faults", {"limit": True, "api": "chat", "times": 1})
        status, headers, body = self.c.json("POST", "/v1/chat/completions", {"model": "m", "messages": []})
        self.assertEqual((status, body["error"]["code"], headers["retry-after"]), (429, "rate_limit_exceeded", "60"))
        self.assertEqual(self.c.json("GET", "/_mock/faults")[2]["faults"][-1]["times_left"], 0)

        status, _, body = self.c.json("POST", "/_mock/faults", {"reset_s": 5, "status": 429})
        self.assertEqual(status, 400)

    def test_limit_can_spare_side_requests(self):
        self.c.json("POST", "/_mock/faults", {"limit": True, "side": False, "times": 1})
        side = anthropic([{"role": "user", "content": "title this"}], False, ())
        self.assertEqual(self.c.request("POST", "/v1/messages", side)[0], 200)
        self.assertEqual(self.c.request("POST", "/v1/messages/count_tokens", side)[0], 200)
        self.assertEqual(self.c.request("POST", "/v1/messages", anthropic([{"role": "user", "content": "hi"}], False))[0], 429)

    # ---- slow mode ----
    def test_jitter_is_bounded_and_seeded(self):
        def run(n):
            out = []
            for _ in range(n):
                t0 = time.monotonic()
                self.c.request("POST", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
                out.append((time.monotonic() - t0, self.last_log()["jitter_s"]))
            return out

        _, _, body = self.c.json("GET", "/_mock/delay?jitter=0.1&seed=7")
        self.assertEqual(body, {"delay": 0.0, "jitter": 0.1, "seed": 7})
        try:
            first = run(4)
            for elapsed, slept in first:
                self.assertTrue(0 <= slept <= 0.1, slept)
                self.assertGreaterEqual(elapsed, slept - 0.005)
                self.assertLess(elapsed, 0.1 + 0.5)
            self.c.json("GET", "/_mock/delay?seed=7")
            self.assertEqual([s for _, s in run(4)], [s for _, s in first])
        finally:
            self.c.json("GET", "/_mock/delay?s=0&jitter=0")
        self.c.request("POST", "/v1/chat/completions", {"model": "m", "messages": []})
        self.assertNotIn("jitter_s", self.last_log())
        self.assertEqual(self.c.json("GET", "/_mock/delay?jitter=x")[0], 400)


class ScriptFlagTest(unittest.TestCase):
    def test_script_flag_and_unknown_script(self):
        proc, port = start_server("--script", "autonomy")
        try:
            c = Client(port)
            _, _, body = c.json("POST", "/v1/chat/completions",
                                {"model": "m", "tools": [CHAT_SHELL], "messages": [{"role": "user", "content": "hi"}]})
            self.assertEqual(json.loads(body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])["command"][2],
                             "touch made-by-agent.txt")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            proc.stdout.close()
        bad = subprocess.run([sys.executable, str(SERVER), "--port", "0", "--script", "no-such-script"],
                             capture_output=True, text=True, timeout=10)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("no script 'no-such-script'", bad.stderr)

    def test_jitter_and_seed_flags(self):
        proc, port = start_server("--jitter", "0.05", "--seed", "3")
        try:
            _, _, body = Client(port).json("GET", "/_mock/delay")
            self.assertEqual(body, {"delay": 0.0, "jitter": 0.05, "seed": 3})
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            proc.stdout.close()

    def test_shipped_scripts_load(self):
        sys.path.insert(0, str(HERE))
        import mock_llm

        for path in sorted((HERE / "scripts").glob("*.json")):
            with self.subTest(script=path.name):
                mock_llm.load_script(path.read_text(), path.name)


if __name__ == "__main__":
    unittest.main()
