#!/usr/bin/env python3
"""mock-llm: a scripted model server for driving agent CLIs offline.

Python 3 standard library only. Listens on 127.0.0.1 only and never opens a connection
anywhere. See README.md next to this file for the full description.

APIs (all of them streaming and non-streaming where the real API has both):
  * Anthropic Messages       POST /v1/messages              (Claude Code)
                             POST /v1/messages/count_tokens
  * OpenAI Chat Completions  POST /v1/chat/completions      (aider, litellm, ...)
  * Ollama chat              POST /api/chat                 (non-streaming)
  * OpenAI Responses         POST /v1/responses             (Codex CLI)
  * Gemini                   POST /v1beta/models/<m>:streamGenerateContent?alt=sse,
                             :generateContent, :countTokens (Gemini CLI)

What it answers: the fidelity conversation when a user prompt carries `FIDELITY <kind>
<token>` (reply / echo / touch / wipe: the answer carries the token), else a scripted
conversation (tools/mock-llm/scripts/<name>.json) chosen by a `[script:<name>]` tag in a
user message, else --script, else the built-in default (hello / made-by-agent). The
server keeps no conversation state: the turn it plays is the number of tool-call turns
already in the conversation it is sent, after the user message that chose the script (a
refused call comes back too, so a refusal advances the script).

Control endpoints (under /_mock/): health, requests (log), faults (fault injection and
usage-limit presets), delay (and jitter), scripts. `--port 0` binds a free port; the first
line on stdout is always `listening on 127.0.0.1:PORT`.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

HERE = Path(__file__).resolve().parent

# ---- the default conversation (no script) ------------------------------------------------
TRIGGER = "made-by-agent"
TOOL_COMMAND = "touch made-by-agent.txt"
TOOL_DESCRIPTION = "create a file"
FINAL_REPLY = "All done: created made-by-agent.txt"
HELLO_REPLY = "Hello from the mock model."
SIDE_REPLY = "Mock"

SCRIPT_TAG = re.compile(r"\[script:([A-Za-z0-9_.-]+)\]")
SCRIPT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# ---- the fidelity conversation ----------------------------------------------------------
# A prompt carrying `FIDELITY <kind> <token>` gets an answer that carries the token, so a
# benchmark can tell which task got which reply (see README "Fidelity conversation").
FIDELITY_TAG = re.compile(r"\bFIDELITY (reply|echo|touch|wipe) (tok-[a-z0-9]{4,32})(?![A-Za-z0-9_-])")
FIDELITY_CALLS = {
    # kind: (command, description, escalate (Codex asks first), text once a result came back)
    "echo": ("echo {token}", "print the token", False, "echoed {token}"),
    "touch": ("touch {token}.txt", "create a file", True, "created {token}.txt"),
    "wipe": ("rm -rf ~/important", "wipe", True, "refused {token}"),
}
FIDELITY_REPLY = "all done {token}"


def fidelity_usage(token: str) -> dict:
    """Fixed token counts for fidelity answers: every kind non-zero, input tied to the token."""
    return {"input_tokens": 1000 + len(token), "output_tokens": 20, "cache_read_tokens": 300, "cache_creation_tokens": 50}

# Output tokens reported for a turn when neither the turn nor the script says.
DEFAULT_OUTPUT_TOKENS = 10


class State:
    """Everything the server keeps between requests (not the conversation)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.delay = 0.0
        self.jitter = 0.0  # extra uniform 0..jitter seconds before a request's first event
        self.seed: int | None = None
        self.rng = random.Random()
        self.default_script: str | None = None
        self.script_dirs: list[Path] = [HERE / "scripts"]
        self.scripts: dict[str, dict] = {}  # posted at run time; win over files
        self.faults: list[dict] = []
        self.requests: list[dict] = []
        self.bodies: dict[int, dict] = {}  # request number -> JSON body (GET /_mock/requests?bodies=1)
        self.log_file = sys.stderr

    def log(self, entry: dict) -> None:
        line = json.dumps({"t": round(time.time(), 3), **entry})
        with self.lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def set_jitter(self, jitter: float | None = None, seed: int | None = None) -> None:
        with self.lock:
            if jitter is not None:
                self.jitter = max(0.0, float(jitter))
            if seed is not None:
                self.seed = int(seed)
                self.rng = random.Random(self.seed)

    def draw_jitter(self) -> float:
        with self.lock:
            return self.rng.uniform(0.0, self.jitter) if self.jitter > 0 else 0.0

    def script(self, name: str) -> dict | None:
        with self.lock:
            if name in self.scripts:
                return self.scripts[name]
        if not SCRIPT_NAME.match(name):
            return None
        for d in self.script_dirs:
            path = d / f"{name}.json"
            if path.is_file():
                return load_script(path.read_text(), str(path))
        return None

    def take_fault(self, info: dict) -> tuple[int, dict] | None:
        """The first active fault rule matching this request (its counters updated)."""
        with self.lock:
            for i, rule in enumerate(self.faults):
                if not fault_matches(rule, info):
                    continue
                if rule.get("_skip_left", 0) > 0:
                    rule["_skip_left"] -= 1
                    continue
                left = rule.get("_times_left")
                if left is not None:
                    if left <= 0:
                        continue
                    rule["_times_left"] = left - 1
                rule["_hits"] = rule.get("_hits", 0) + 1
                return i, rule
        return None


STATE = State()


class ScriptError(ValueError):
    pass


SCRIPT_KEYS = {"description", "turns", "usage", "after_end"}
USAGE_KEYS = {"input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"}
TURN_KEYS = {"text", "shell", "tool", "input", "description", "say", "usage", "delay", "escalate", "calls"}
CALL_KEYS = {"shell", "tool", "input", "description", "escalate"}


def load_script(text: str, where: str = "script") -> dict:
    """Parses and checks a script (JSON text). Raises ScriptError."""
    try:
        script = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScriptError(f"{where}: not JSON: {e}") from e
    if not isinstance(script, dict) or not isinstance(script.get("turns"), list) or not script["turns"]:
        raise ScriptError(f'{where}: needs {{"turns": [ ... ]}} with at least one turn')
    unknown = set(script) - SCRIPT_KEYS
    if unknown:
        raise ScriptError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(SCRIPT_KEYS)})")
    if set(script.get("usage") or {}) - USAGE_KEYS:
        raise ScriptError(f"{where}: unknown usage keys (known: {sorted(USAGE_KEYS)})")
    for i, turn in enumerate(script["turns"]):
        if not isinstance(turn, dict):
            raise ScriptError(f"{where}: turn {i} is not an object")
        unknown = set(turn) - TURN_KEYS
        if unknown:
            raise ScriptError(f"{where}: turn {i}: unknown keys {sorted(unknown)}")
        if set(turn.get("usage") or {}) - USAGE_KEYS:
            raise ScriptError(f"{where}: turn {i}: unknown usage keys (known: {sorted(USAGE_KEYS)})")
        kinds = [k for k in ("text", "shell", "tool", "calls") if k in turn]
        if len(kinds) != 1:
            raise ScriptError(f'{where}: turn {i}: needs exactly one of "text", "shell", "tool", "calls"')
        calls = turn["calls"] if "calls" in turn else [turn] if kinds[0] in ("shell", "tool") else []
        if not isinstance(calls, list) or ("calls" in turn and not calls):
            raise ScriptError(f'{where}: turn {i}: "calls" must be a list of shell/tool calls')
        for c in calls:
            if not isinstance(c, dict) or len([k for k in ("shell", "tool") if k in c]) != 1:
                raise ScriptError(f'{where}: turn {i}: each call needs exactly one of "shell", "tool"')
            if "calls" in turn and set(c) - CALL_KEYS:
                raise ScriptError(f"{where}: turn {i}: unknown keys in a call {sorted(set(c) - CALL_KEYS)}")
            if "tool" in c and not isinstance(c.get("input", {}), dict):
                raise ScriptError(f'{where}: turn {i}: "input" must be an object')
    return script


# ---- fault rules -----------------------------------------------------------------------
FAULT_KEYS = {
    # match
    "path", "method", "api", "model", "side",
    # how often
    "times", "skip",
    # what
    "status", "retry_after", "body", "message", "hang_s", "malformed", "truncate_stream_after",
    "limit", "reset_s",
}


def check_fault(rule) -> dict:
    if not isinstance(rule, dict):
        raise ValueError("a fault rule must be a JSON object")
    unknown = set(rule) - FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys {sorted(unknown)} (known: {sorted(FAULT_KEYS)})")
    effects = {"status", "hang_s", "malformed", "truncate_stream_after"} & set(rule)
    if rule.get("limit"):
        effects.add("limit")
    if not effects:
        raise ValueError("a fault rule needs one of status, hang_s, malformed, truncate_stream_after, limit")
    if "reset_s" in rule and not rule.get("limit"):
        raise ValueError('"reset_s" goes with "limit": true')
    try:
        if float(rule.get("reset_s", 0)) < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError('"reset_s" must be a number of seconds >= 0') from None
    rule = dict(rule)
    if "times" in rule:
        rule["_times_left"] = int(rule["times"])
    rule["_skip_left"] = int(rule.get("skip", 0))
    rule["_hits"] = 0
    return rule


def fault_matches(rule: dict, info: dict) -> bool:
    if "path" in rule and rule["path"] not in info["path"]:
        return False
    if "method" in rule and rule["method"].upper() != info["method"]:
        return False
    if "api" in rule and rule["api"] != info.get("api"):
        return False
    if "model" in rule and rule["model"] != info.get("model"):
        return False
    if "side" in rule and bool(rule["side"]) != info.get("side", False):
        return False
    return True


def public_rule(rule: dict) -> dict:
    out = {k: v for k, v in rule.items() if not k.startswith("_")}
    out["hits"] = rule.get("_hits", 0)
    if "_times_left" in rule:
        out["times_left"] = rule["_times_left"]
    return out


# ---- helpers ---------------------------------------------------------------------------
def chunks(text: str, n: int = 4) -> list[str]:
    """Splits text into about n pieces (at spaces), so it streams in parts."""
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
                for key in ("text", "input_text", "output_text"):
                    if isinstance(block.get(key), str):
                        out.append(block[key])
                if isinstance(block.get("content"), (str, list)) and block.get("type") != "tool_result":
                    out.append(text_of(block["content"]))
            elif isinstance(block, str):
                out.append(block)
    return "\n".join(out)


STRUCTURAL_KEYS = {"role", "type", "id", "call_id", "tool_use_id", "status", "cache_control"}


def count_chars(value) -> int:
    """Characters of the strings inside a JSON value, leaving out structural fields
    (role, type, ids): the text the model would read, for the token estimate."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(count_chars(v) for k, v in value.items() if k not in STRUCTURAL_KEYS)
    if isinstance(value, list):
        return sum(count_chars(v) for v in value)
    return 0


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class Conversation:
    """What the server needs from a request, whatever the API.

    events, in conversation order:
      ("prompt", text)  a user message with text (not only tool results);
      ("calls", None)   an assistant turn that called tools (one per turn, however many
                        calls it made in parallel);
      ("reply", None)   an assistant turn with text only;
      ("result", None)  a tool result (Anthropic tool_result block, Responses
                        function_call_output item, Gemini functionResponse part, Chat
                        role "tool" message).
    tools: {name: JSON schema of its parameters (or {})}.
    """

    def __init__(self, api: str, model: str, events: list, tools: dict, prompt_chars: int, wants_json=False):
        self.api = api
        self.model = model
        self.events = events
        self.tools = tools
        self.prompt_chars = prompt_chars
        self.wants_json = wants_json

    @property
    def last_prompt(self) -> str:
        for kind, text in reversed(self.events):
            if kind == "prompt":
                return text
        return ""

    def turns_after(self, index: int) -> int:
        """How many script turns were played after events[index] (the prompt that chose
        the script): one per assistant tool-call turn. Gemini CLI, when a tool call is
        refused, drops that call from its history, and with it the tool result before it
        (the next prompt then follows the previous call directly) or, for the first call
        after a prompt, nothing else (the next prompt then follows that prompt directly):
        there such a prompt counts as one more turn, played and refused."""
        n = 0
        prev = "prompt" if index >= 0 else None
        for kind, _ in self.events[index + 1 :]:
            if kind == "calls":
                n += 1
            elif kind == "prompt" and prev in ("calls", "prompt") and self.api == "gemini":
                n += 1
            prev = kind
        return n

    @property
    def results(self) -> int:
        return sum(1 for kind, _ in self.events if kind == "result")

    def fidelity(self) -> tuple[int, str, str] | None:
        """(event index, kind, token) of the latest user text carrying a FIDELITY tag (the
        last tag in it), or None. Later user texts without a tag (Codex's environment
        context, "go on", Claude Code's interruption note) do not hide it."""
        for i in range(len(self.events) - 1, -1, -1):
            kind, text = self.events[i]
            if kind == "prompt" and text:
                tags = FIDELITY_TAG.findall(text)
                if tags:
                    return i, tags[-1][0], tags[-1][1]
        return None

    def result_after(self, index: int) -> bool:
        """Whether a tool result came back after events[index]. Gemini CLI drops a refused
        call (and the result before it) from its history: there a prompt right after a
        call, or right after events[index], stands for a call made and refused."""
        prev = "prompt"
        for kind, _ in self.events[index + 1 :]:
            if kind == "result":
                return True
            if self.api == "gemini" and kind == "prompt" and prev in ("calls", "prompt"):
                return True
            prev = kind
        return False


def is_reminder(text: str) -> bool:
    """Claude Code's own notes to the model, sent as text next to tool results."""
    t = text.strip()
    return not t or (t.startswith("<system-reminder>") and t.endswith("</system-reminder>"))


def anthropic_conversation(body: dict) -> Conversation:
    events = []
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        blocks = [b for b in blocks if isinstance(b, dict)]
        if m.get("role") == "assistant":
            events.append(("calls" if any(b.get("type") == "tool_use" for b in blocks) else "reply", None))
            continue
        if m.get("role") != "user":
            continue
        results = [b for b in blocks if b.get("type") == "tool_result"]
        events += [("result", None)] * len(results)
        texts = [text_of([b]) for b in blocks if b.get("type") != "tool_result"]
        if not results or any(not is_reminder(t) for t in texts):
            events.append(("prompt", "\n".join(texts)))
    tools = {t.get("name"): t.get("input_schema") or {} for t in body.get("tools") or [] if t.get("name")}
    chars = count_chars(body.get("system")) + count_chars(body.get("messages")) + count_chars(body.get("tools"))
    return Conversation("anthropic", body.get("model") or "mock-model", events, tools, chars)


def responses_conversation(body: dict) -> Conversation:
    items = body.get("input") or []
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    events = []
    for it in items:
        typ = it.get("type", "message")
        if typ.endswith("_call_output"):
            events.append(("result", None))
        elif typ.endswith("_call"):
            # Parallel calls come as consecutive call items: one turn.
            if not events or events[-1][0] != "calls":
                events.append(("calls", None))
        elif typ == "message" and it.get("role") == "user":
            events.append(("prompt", text_of(it.get("content"))))
        elif typ == "message" and it.get("role") == "assistant":
            events.append(("reply", None))
    tools = {}
    for t in body.get("tools") or []:
        name = t.get("name") or (t.get("function") or {}).get("name")
        if name:
            tools[name] = t.get("parameters") or (t.get("function") or {}).get("parameters") or {}
    chars = count_chars(body.get("instructions")) + count_chars(items) + count_chars(body.get("tools"))
    return Conversation("responses", body.get("model") or "mock-model", events, tools, chars)


def gemini_conversation(body: dict, model: str) -> Conversation:
    events = []
    for c in body.get("contents") or []:
        parts = [p for p in c.get("parts") or [] if isinstance(p, dict)]
        if c.get("role") == "model":
            events.append(("calls" if any("functionCall" in p for p in parts) else "reply", None))
            continue
        results = [p for p in parts if "functionResponse" in p]
        events += [("result", None)] * len(results)
        # One event per text part: Gemini CLI appends the next prompt to the same
        # content when it dropped a refused first call (see turns_after).
        texts = [p["text"] for p in parts if isinstance(p.get("text"), str)]
        if not results and not texts:
            events.append(("prompt", ""))
        events += [("prompt", t) for t in texts if t.strip() or not results]
    tools = {}
    for t in body.get("tools") or []:
        for d in t.get("functionDeclarations") or []:
            if d.get("name"):
                tools[d["name"]] = d.get("parametersJsonSchema") or d.get("parameters") or {}
    gen = body.get("generationConfig") or {}
    wants_json = gen.get("responseMimeType") == "application/json"
    chars = count_chars(body.get("systemInstruction")) + count_chars(body.get("contents")) + count_chars(body.get("tools"))
    return Conversation("gemini", model, events, tools, chars, wants_json)


def chat_conversation(body: dict) -> Conversation:
    events = []
    for m in body.get("messages") or []:
        role = m.get("role")
        if role in ("tool", "function"):
            events.append(("result", None))
        elif role == "assistant":
            events.append(("calls" if m.get("tool_calls") or m.get("function_call") else "reply", None))
        elif role == "user":
            events.append(("prompt", text_of(m.get("content"))))
    tools = {}
    for t in body.get("tools") or []:
        fn = t.get("function") or t
        if fn.get("name"):
            tools[fn["name"]] = fn.get("parameters") or {}
    for fn in body.get("functions") or []:
        if fn.get("name"):
            tools[fn["name"]] = fn.get("parameters") or {}
    chars = count_chars(body.get("messages")) + count_chars(body.get("tools"))
    return Conversation("chat", body.get("model") or "mock-model", events, tools, chars)


# ---- deciding what to answer -----------------------------------------------------------
class Plan:
    """What to answer: a turn (dict as in a script) plus where it came from."""

    def __init__(self, turn: dict, action: str, script: str | None = None, index: int | None = None,
                 usage: dict | None = None, token: str | None = None):
        self.turn = turn
        self.action = action
        self.script = script
        self.index = index
        self.usage = usage or {}
        self.token = token


def fidelity_plan(conv: Conversation, kind: str, token: str, index: int) -> Plan:
    usage = fidelity_usage(token)
    if kind == "reply":
        return Plan({"text": FIDELITY_REPLY.format(token=token)}, "fidelity-reply-text", usage=usage, token=token)
    command, description, escalate, done = FIDELITY_CALLS[kind]
    if conv.result_after(index):
        return Plan({"text": done.format(token=token)}, f"fidelity-{kind}-text", usage=usage, token=token)
    turn = {"shell": command.format(token=token), "description": description, "escalate": escalate}
    return Plan(turn, f"fidelity-{kind}-call", usage=usage, token=token)


def is_side(conv: Conversation) -> bool:
    """A request outside the conversation: Gemini's JSON checks, or no tools offered
    (outside Chat Completions, where clients without tools, like aider, are the
    conversation itself)."""
    return conv.wants_json or (not conv.tools and conv.api != "chat")


def plan(conv: Conversation) -> Plan:
    if conv.wants_json:
        # Gemini CLI's next-speaker / routing checks: "the user speaks next" ends a turn.
        answer = json.dumps({"reasoning": "The model answered; the user speaks next.", "next_speaker": "user"})
        return Plan({"text": answer}, "json")
    if not conv.tools:
        # Side requests (titles, topic checks, summaries): never part of a script.
        # Chat Completions clients without tools (aider) are the exception: they are
        # the conversation itself.
        if conv.api != "chat":
            return Plan({"text": SIDE_REPLY}, "side")

    # A script: the latest user message with a tag, else --script from the first message.
    name, start = None, None
    for i in range(len(conv.events) - 1, -1, -1):
        kind, text = conv.events[i]
        if kind == "prompt":
            m = SCRIPT_TAG.search(text)
            if m:
                name, start = m.group(1), i
                break

    # The fidelity conversation: wins over --script and over a [script:] tag in an
    # older (or the same) prompt.
    fid = conv.fidelity()
    if fid is not None and (start is None or fid[0] >= start):
        return fidelity_plan(conv, fid[1], fid[2], fid[0])

    if name is None and STATE.default_script:
        name, start = STATE.default_script, -1
    if name is not None:
        try:
            script = STATE.script(name)
        except ScriptError as e:
            return Plan({"text": f"mock-llm: {e}"}, "script-error", name)
        if script is None:
            return Plan({"text": f"mock-llm: no script named {name!r}"}, "script-error", name)
        turns = script["turns"]
        index = conv.turns_after(start)
        if index >= len(turns):
            turn = {"text": script.get("after_end", f"(mock-llm: script {name} has ended)")}
            return Plan(turn, "script-ended", name, index, script.get("usage"))
        turn = turns[index]
        kind = next(k for k in ("text", "shell", "tool", "calls") if k in turn)
        return Plan(turn, kind, name, index, script.get("usage"))

    # The built-in default: hello, or a command that makes made-by-agent.txt.
    last_is_result = bool(conv.events) and conv.events[-1][0] == "result"
    if last_is_result:
        return Plan({"text": FINAL_REPLY}, "final")
    if TRIGGER in conv.last_prompt:
        turn = {"shell": TOOL_COMMAND, "description": TOOL_DESCRIPTION}
        if conv.api == "anthropic":
            turn["say"] = "I'll create the file."
        elif conv.api == "chat":
            turn["say"] = "I'll create the file with this command:"
        return Plan(turn, "tool")
    return Plan({"text": HELLO_REPLY}, "hello")


# Shell tools by name, most wanted first, and how to fill in their arguments.
SHELL_TOOLS = ["Bash", "exec_command", "run_shell_command", "shell", "bash", "local_shell", "run_command",
               "execute_command", "shell_command", "terminal"]


def shell_tool(conv: Conversation) -> str | None:
    for name in SHELL_TOOLS:
        if name in conv.tools:
            return name
    for name in conv.tools:
        low = name.lower()
        if any(w in low for w in ("shell", "bash", "command", "exec", "terminal")):
            return name
    for name, schema in conv.tools.items():
        props = (schema or {}).get("properties") or {}
        if "command" in props or "cmd" in props:
            return name
    return None


def shell_args(name: str, schema: dict, turn: dict) -> dict:
    cmd = turn["shell"]
    desc = turn.get("description") or ""
    escalate = turn.get("escalate", True)
    if name == "Bash":
        return {"command": cmd, "description": desc} if desc else {"command": cmd}
    if name == "exec_command":
        args = {"cmd": cmd}
        if escalate:
            args["sandbox_permissions"] = "require_escalated"
            args["justification"] = desc or "the script asks for it"
        return args
    if name == "run_shell_command":
        return {"command": cmd, "description": desc} if desc else {"command": cmd}
    # Anything else: read its parameter schema.
    props = (schema or {}).get("properties") or {}
    args = {}
    key = next((k for k in ("command", "cmd", "commands", "script", "code", "input") if k in props), "command")
    if (props.get(key) or {}).get("type") == "array":
        args[key] = ["bash", "-lc", cmd]
    else:
        args[key] = cmd
    if desc:
        for k in ("description", "justification", "reason", "explanation"):
            if k in props:
                args[k] = desc
                break
    if escalate:
        if "sandbox_permissions" in props:
            args["sandbox_permissions"] = "require_escalated"
        if "with_escalated_permissions" in props:
            args["with_escalated_permissions"] = True
        if "justification" in props and "justification" not in args:
            args["justification"] = desc or "the script asks for it"
    return args


def render(conv: Conversation, p: Plan) -> list[dict]:
    """The turn as a list of blocks: {"text": ...} or {"call": name, "args": {...}}."""
    turn = p.turn
    blocks = []
    if "text" in turn:
        if turn.get("say"):
            blocks.append({"text": turn["say"]})
        blocks.append({"text": turn["text"]})
        return blocks
    calls = turn.get("calls") or [turn]
    shell = shell_tool(conv)
    if shell is None and any("shell" in c for c in calls):
        # No tool to run commands with (aider): suggest the commands in a ```bash block,
        # which aider offers to run.
        intro = turn.get("say") or "I'll run this command:"
        cmds = "\n".join(c["shell"] for c in calls if "shell" in c)
        blocks.append({"text": f"{intro}\n\n```bash\n{cmds}\n```\n"})
        calls = [c for c in calls if "shell" not in c]
    elif turn.get("say"):
        blocks.append({"text": turn["say"]})
    for c in calls:
        if "tool" in c:
            blocks.append({"call": c["tool"], "args": copy.deepcopy(c.get("input") or {})})
        else:
            blocks.append({"call": shell, "args": shell_args(shell, conv.tools.get(shell) or {}, c)})
    return blocks


def usage_for(conv: Conversation, p: Plan, blocks: list[dict]) -> dict:
    """Deterministic token counts: the turn's "usage", else the script's, else
    input = characters of text in the request // 4, output = 10, cache = 0."""
    given = {**(p.usage or {}), **(p.turn.get("usage") or {})}
    return {
        "input_tokens": int(given.get("input_tokens", max(1, conv.prompt_chars // 4))),
        "output_tokens": int(given.get("output_tokens", DEFAULT_OUTPUT_TOKENS)),
        "cache_read_tokens": int(given.get("cache_read_tokens", 0)),
        "cache_creation_tokens": int(given.get("cache_creation_tokens", 0)),
    }


# ---- the HTTP server -------------------------------------------------------------------
class Abort(Exception):
    """Stop answering this request now (connection closed on purpose)."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-llm/2"
    # Headers and body go out in separate writes: without TCP_NODELAY a keep-alive
    # client waits ~40 ms per request on the delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # no default access log
        pass

    # ---- plumbing ----
    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, obj, status=200, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_raw(self, body: bytes, status=200, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
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
        self.events_sent = 0

    def sse(self, data, event: str | None = None):
        limit = self.fault.get("truncate_stream_after") if self.fault else None
        if limit is not None and self.events_sent >= int(limit):
            self.truncated = True
            raise Abort()
        delay = self.turn_delay if self.turn_delay is not None else STATE.delay
        if delay:
            time.sleep(delay)
        msg = ""
        if event:
            msg += f"event: {event}\n"
        msg += "data: " + (data if isinstance(data, str) else json.dumps(data)) + "\n\n"
        self.wfile.write(msg.encode())
        self.wfile.flush()
        self.events_sent += 1

    def reserve(self, entry: dict, body=None):
        """Appends `entry` to the request list now (numbered in arrival order); the
        caller fills it in and writes it to the log when the answer is done."""
        with STATE.lock:
            entry.update({"n": len(STATE.requests) + 1, "t": round(time.time(), 3)})
            STATE.requests.append(entry)
            if body is not None:
                STATE.bodies[entry["n"]] = body

    def record(self, entry: dict, body=None):
        with STATE.lock:
            entry = {"n": len(STATE.requests) + 1, "t": round(time.time(), 3), **entry}
            STATE.requests.append(entry)
            if body is not None:
                STATE.bodies[entry["n"]] = body
        STATE.log(entry)

    # ---- routing ----
    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        url = urlparse(self.path)
        if url.path.startswith("/_mock/"):
            return self.control("GET", url, b"")
        self.record({"method": "GET", "path": self.path})
        if url.path.rstrip("/").endswith("/models"):
            return self.send_json(
                {
                    "object": "list",
                    "data": [{"id": "mock-model", "object": "model", "owned_by": "mock"}],
                    "models": [],
                }
            )
        self.send_json({"error": {"message": f"mock-llm: no GET {url.path}"}}, 404)

    def do_DELETE(self):
        url = urlparse(self.path)
        if url.path.startswith("/_mock/"):
            return self.control("DELETE", url, b"")
        self.send_json({"error": {"message": f"mock-llm: no DELETE {url.path}"}}, 404)

    def do_POST(self):
        url = urlparse(self.path)
        raw = self.read_body()
        if url.path.startswith("/_mock/"):
            return self.control("POST", url, raw)
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        path = url.path
        self.fault = None
        self.turn_delay = None
        self.truncated = False
        self.events_sent = 0
        if path.endswith("/messages/count_tokens"):
            api, conv = "anthropic", anthropic_conversation(body)
        elif path.endswith("/messages"):
            api, conv = "anthropic", anthropic_conversation(body)
        elif path.endswith("/responses"):
            api, conv = "responses", responses_conversation(body)
        elif path.endswith("/chat/completions"):
            api, conv = "chat", chat_conversation(body)
        elif path.endswith("/api/chat"):
            # Ollama's native chat API: the same message list as Chat Completions.
            api, conv = "ollama", chat_conversation(body)
        elif ":" in path and "/models/" in path:
            api = "gemini"
            conv = gemini_conversation(body, path.split("/models/")[-1].split(":")[0])
        else:
            self.record({"method": "POST", "path": self.path, "status": 404, "note": "unknown path"})
            return self.send_json({"error": {"message": f"mock-llm: no POST {path}"}}, 404)

        entry = {"method": "POST", "path": self.path, "api": api, "model": conv.model, "stream": bool(body.get("stream"))}
        if api == "gemini":
            entry["stream"] = ":streamGenerateContent" in path
        side = is_side(conv) or path.endswith("/count_tokens") or ":countTokens" in path
        hit = STATE.take_fault({"path": path, "method": "POST", "api": api, "model": conv.model, "side": side})
        if hit:
            entry["fault"] = hit[0]
            self.fault = hit[1]
        # Listed in arrival order at once (GET /_mock/requests shows it while it is
        # answered; the entry is filled in as the answer goes); written to --log when done.
        self.reserve(entry, body)
        try:
            self.answer(api, path, body, conv, entry)
        except Abort:
            entry["note"] = "stream truncated" if self.truncated else "aborted"
            self.close_connection = True
            try:
                self.wfile.flush()
                self.connection.shutdown(2)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError):
            entry["note"] = "client went away"
        # When the last byte of the answer was written (`t` is when the request came in).
        entry["t_done"] = round(time.time(), 4)
        STATE.log(entry)

    def answer(self, api, path, body, conv, entry):
        f = self.fault or {}
        jitter = STATE.draw_jitter()
        if jitter:
            entry["jitter_s"] = round(jitter, 4)
            time.sleep(jitter)
        if f.get("hang_s"):
            time.sleep(float(f["hang_s"]))
        if f.get("limit"):
            entry["status"] = int(f.get("status", 429))
            entry["note"] = "usage limit"
            return self.send_limit(api, f)
        if "status" in f:
            entry["status"] = int(f["status"])
            return self.send_error_status(api, f)
        if f.get("malformed"):
            entry["status"] = 200
            entry["note"] = "malformed"
            streaming = entry["stream"]
            if streaming:
                self.start_sse()
                self.wfile.write(b"data: {\"this is\": not json\n\n")
                self.wfile.flush()
                raise Abort()
            return self.send_raw(b'{"this is": not json')

        if path.endswith("/messages/count_tokens"):
            entry.update(status=200, action="count_tokens")
            return self.send_json({"input_tokens": max(1, conv.prompt_chars // 4)})
        if ":countTokens" in path:
            entry.update(status=200, action="count_tokens")
            return self.send_json({"totalTokens": max(1, conv.prompt_chars // 4)})

        p = plan(conv)
        self.turn_delay = p.turn.get("delay")
        blocks = render(conv, p)
        usage = usage_for(conv, p, blocks)
        entry.update(
            status=200,
            action=p.action,
            script=p.script,
            turn=p.index,
            tools=len(conv.tools),
            results=conv.results,
            usage=usage,
            token=p.token,
            calls=[b["call"] for b in blocks if "call" in b],
            last_user=conv.last_prompt[-200:],
        )
        if api == "anthropic":
            return self.anthropic(body, conv, blocks, usage)
        if api == "responses":
            return self.openai_responses(body, conv, blocks, usage)
        if api == "chat":
            return self.chat(body, conv, blocks, usage)
        if api == "ollama":
            return self.ollama(conv, blocks, usage)
        if ":streamGenerateContent" in path or ":generateContent" in path:
            return self.gemini(conv, blocks, usage, stream=":streamGenerateContent" in path)
        return self.send_json({"error": {"message": f"mock-llm: no POST {path}"}}, 404)

    def send_error_status(self, api, f):
        status = int(f["status"])
        message = f.get("message") or f"mock-llm: injected fault {status}"
        headers = {}
        if "retry_after" in f:
            headers["Retry-After"] = str(f["retry_after"])
        if "body" in f:
            body = f["body"] if isinstance(f["body"], (dict, list)) else {"error": {"message": str(f["body"])}}
            return self.send_json(body, status, headers)
        if api == "anthropic":
            kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            body = {"type": "error", "error": {"type": kind, "message": message}}
        elif api == "gemini":
            kind = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                    429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(status, "INTERNAL")
            body = {"error": {"code": status, "message": message, "status": kind}}
        else:
            kind = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status, "server_error")
            body = {"error": {"message": message, "type": kind, "code": kind}}
        return self.send_json(body, status, headers)

    def send_limit(self, api, f):
        """HTTP 429 the way each provider reports a usage / rate limit, resetting in
        reset_s seconds."""
        status = int(f.get("status", 429))
        reset = float(f.get("reset_s", 60))
        secs = int(reset) if reset == int(reset) else reset
        reset_at = int(time.time() + reset + 0.999)
        headers = {"retry-after": str(f.get("retry_after", int(reset + 0.999)))}
        if api == "anthropic":
            message = f.get("message") or f"mock-llm: usage limit reached; resets in {secs}s"
            headers["anthropic-ratelimit-unified-status"] = "rejected"
            headers["anthropic-ratelimit-unified-reset"] = str(reset_at)
            body = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
        elif api == "responses":
            message = f.get("message") or "You've hit your usage limit."
            # Codex 0.169 reads resets_at (epoch seconds); older versions resets_in_seconds.
            body = {"error": {"type": "usage_limit_reached", "message": message,
                              "resets_in_seconds": secs, "resets_at": reset_at}}
        elif api == "gemini":
            message = f.get("message") or (
                "Quota exceeded for quota metric 'Generate Content API requests per minute' (mock-llm). "
                f"Please retry in {secs}s.")
            body = {"error": {"code": status, "status": "RESOURCE_EXHAUSTED", "message": message,
                              "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{secs}s"}]}}
        elif api == "ollama":
            body = {"error": f.get("message") or f"mock-llm: usage limit reached; retry in {secs}s"}
        else:
            message = f.get("message") or f"Rate limit reached (mock-llm). Please try again in {secs}s."
            headers["x-ratelimit-reset-requests"] = f"{secs}s"
            body = {"error": {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
        if "body" in f:
            body = f["body"] if isinstance(f["body"], (dict, list)) else {"error": {"message": str(f["body"])}}
        return self.send_json(body, status, headers)

    # ---- control endpoints ----
    def control(self, method: str, url, raw: bytes):
        path = url.path
        if path == "/_mock/health":
            return self.send_json({"ok": True, "port": self.server.server_address[1]})
        if path == "/_mock/delay":
            q = parse_qs(url.query)
            try:
                if "s" in q:
                    STATE.delay = max(0.0, float(q["s"][0]))
                STATE.set_jitter(float(q["jitter"][0]) if "jitter" in q else None,
                                 int(q["seed"][0]) if "seed" in q else None)
            except ValueError:
                return self.send_json({"error": {"message": "expected ?s=SECONDS&jitter=SECONDS&seed=N"}}, 400)
            return self.send_json({"delay": STATE.delay, "jitter": STATE.jitter, "seed": STATE.seed})
        if path == "/_mock/requests":
            if method == "DELETE":
                with STATE.lock:
                    STATE.requests.clear()
                    STATE.bodies.clear()
                return self.send_json({"count": 0})
            with STATE.lock:
                reqs = list(STATE.requests)
                if parse_qs(url.query).get("bodies") == ["1"]:
                    reqs = [{**r, "body": STATE.bodies.get(r["n"])} for r in reqs]
            return self.send_json({"count": len(reqs), "paths": [r["path"] for r in reqs], "requests": reqs})
        if path == "/_mock/faults":
            if method == "DELETE":
                with STATE.lock:
                    STATE.faults.clear()
                return self.send_json({"faults": []})
            if method == "POST":
                try:
                    rules = json.loads(raw or b"[]")
                    rules = rules if isinstance(rules, list) else [rules]
                    rules = [check_fault(r) for r in rules]
                except (ValueError, TypeError) as e:
                    return self.send_json({"error": {"message": str(e)}}, 400)
                with STATE.lock:
                    STATE.faults.extend(rules)
            with STATE.lock:
                faults = [public_rule(r) for r in STATE.faults]
            return self.send_json({"faults": faults})
        if path.startswith("/_mock/scripts/"):
            name = path.rsplit("/", 1)[-1]
            if not SCRIPT_NAME.match(name):
                return self.send_json({"error": {"message": f"bad script name {name!r}"}}, 400)
            if method == "POST":
                try:
                    script = load_script(raw.decode() or "null", name)
                except ScriptError as e:
                    return self.send_json({"error": {"message": str(e)}}, 400)
                with STATE.lock:
                    STATE.scripts[name] = script
                return self.send_json({"script": name, "turns": len(script["turns"])})
            if method == "DELETE":
                with STATE.lock:
                    STATE.scripts.pop(name, None)
                return self.send_json({"script": name, "deleted": True})
            try:
                script = STATE.script(name)
            except ScriptError as e:
                return self.send_json({"error": {"message": str(e)}}, 400)
            if script is None:
                return self.send_json({"error": {"message": f"no script {name!r}"}}, 404)
            return self.send_json(script)
        if path == "/_mock/script":
            # The --script default, settable at run time: POST {"name": "x"} or {"name": null}.
            if method == "POST":
                try:
                    STATE.default_script = (json.loads(raw or b"{}") or {}).get("name")
                except (ValueError, AttributeError):
                    return self.send_json({"error": {"message": 'expected {"name": "<script>"}'}}, 400)
            return self.send_json({"name": STATE.default_script})
        return self.send_json({"error": {"message": f"mock-llm: no {method} {path}"}}, 404)

    # ---- Anthropic Messages ----
    def anthropic(self, body, conv, blocks, usage):
        model = conv.model
        msg_id = new_id("msg_")
        content = []
        for b in blocks:
            if "text" in b:
                content.append({"type": "text", "text": b["text"]})
            else:
                content.append({"type": "tool_use", "id": new_id("toolu_"), "name": b["call"], "input": b["args"]})
        stop = "tool_use" if any(c["type"] == "tool_use" for c in content) else "end_turn"
        full_usage = {
            "input_tokens": usage["input_tokens"],
            "cache_creation_input_tokens": usage["cache_creation_tokens"],
            "cache_read_input_tokens": usage["cache_read_tokens"],
            "output_tokens": usage["output_tokens"],
        }
        if not body.get("stream"):
            return self.send_json(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": full_usage,
                }
            )
        self.start_sse()
        start_usage = {**full_usage, "output_tokens": 1}
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
                    "usage": start_usage,
                },
            },
            "message_start",
        )
        for i, block in enumerate(content):
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
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
            "message_delta",
        )
        self.sse({"type": "message_stop"}, "message_stop")

    # ---- OpenAI Responses ----
    def openai_responses(self, body, conv, blocks, usage):
        resp_id = new_id("resp_")
        full_usage = {
            "input_tokens": usage["input_tokens"],
            "input_tokens_details": {"cached_tokens": usage["cache_read_tokens"]},
            "output_tokens": usage["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        }
        base = {"id": resp_id, "object": "response", "created_at": int(time.time()), "model": conv.model}
        outputs = []
        for b in blocks:
            if "text" in b:
                outputs.append(
                    {
                        "type": "message",
                        "id": new_id("msg_"),
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": b["text"], "annotations": []}],
                    }
                )
            else:
                outputs.append(
                    {
                        "type": "function_call",
                        "id": new_id("fc_"),
                        "call_id": new_id("call_"),
                        "name": b["call"],
                        "arguments": json.dumps(b["args"]),
                        "status": "completed",
                    }
                )
        if not body.get("stream"):
            return self.send_json({**base, "status": "completed", "output": outputs, "usage": full_usage})
        self.start_sse()
        seq = iter(range(1_000_000))
        self.sse(
            {"type": "response.created", "sequence_number": next(seq), "response": {**base, "status": "in_progress", "output": []}},
            "response.created",
        )
        for idx, item in enumerate(outputs):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                started = {**item, "status": "in_progress", "content": []}
                self.sse(
                    {"type": "response.output_item.added", "sequence_number": next(seq), "output_index": idx, "item": started},
                    "response.output_item.added",
                )
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
                self.sse(
                    {
                        "type": "response.output_item.added",
                        "sequence_number": next(seq),
                        "output_index": idx,
                        "item": {**item, "arguments": "", "status": "in_progress"},
                    },
                    "response.output_item.added",
                )
                self.sse(
                    {
                        "type": "response.function_call_arguments.delta",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": idx,
                        "delta": item["arguments"],
                    },
                    "response.function_call_arguments.delta",
                )
                self.sse(
                    {
                        "type": "response.function_call_arguments.done",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": idx,
                        "arguments": item["arguments"],
                    },
                    "response.function_call_arguments.done",
                )
            self.sse(
                {"type": "response.output_item.done", "sequence_number": next(seq), "output_index": idx, "item": item},
                "response.output_item.done",
            )
        self.sse(
            {
                "type": "response.completed",
                "sequence_number": next(seq),
                "response": {**base, "status": "completed", "output": outputs, "usage": full_usage},
            },
            "response.completed",
        )

    # ---- Gemini ----
    def gemini(self, conv, blocks, usage, stream: bool):
        meta = {
            "promptTokenCount": usage["input_tokens"],
            "candidatesTokenCount": usage["output_tokens"],
            "totalTokenCount": usage["input_tokens"] + usage["output_tokens"],
        }
        if usage["cache_read_tokens"]:
            meta["cachedContentTokenCount"] = usage["cache_read_tokens"]
        pieces = []  # one list of parts per streamed event
        for b in blocks:
            if "text" in b:
                pieces += [[{"text": p}] for p in chunks(b["text"])]
            else:
                pieces.append([{"functionCall": {"name": b["call"], "args": b["args"]}}])

        def resp(parts, finish):
            cand = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                cand["finishReason"] = "STOP"
            return {"candidates": [cand], "usageMetadata": meta, "modelVersion": conv.model}

        if not stream:
            parts, text = [], ""
            for ps in pieces:
                for part in ps:
                    if "text" in part:
                        text += part["text"]
                    else:
                        if text:
                            parts.append({"text": text})
                            text = ""
                        parts.append(part)
            if text:
                parts.append({"text": text})
            return self.send_json(resp(parts, True))
        self.start_sse()
        for i, ps in enumerate(pieces):
            self.sse(resp(ps, i == len(pieces) - 1))

    # ---- OpenAI Chat Completions ----
    def ollama(self, conv, blocks, usage):
        """Ollama POST /api/chat, non-streaming: one JSON object with `message`,
        `done`, and the token counts `prompt_eval_count` / `eval_count`."""
        text = "".join(b["text"] for b in blocks if "text" in b)
        return self.send_json(
            {
                "model": conv.model,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "message": {"role": "assistant", "content": text},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": usage["input_tokens"],
                "eval_count": usage["output_tokens"],
            }
        )

    def chat(self, body, conv, blocks, usage):
        cid = new_id("chatcmpl-")
        model = conv.model
        text = "".join(b["text"] for b in blocks if "text" in b)
        calls = [
            {"id": new_id("call_"), "type": "function", "function": {"name": b["call"], "arguments": json.dumps(b["args"])}}
            for b in blocks
            if "call" in b
        ]
        finish = "tool_calls" if calls else "stop"
        full_usage = {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            "prompt_tokens_details": {"cached_tokens": usage["cache_read_tokens"]},
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            return self.send_json(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": full_usage,
                }
            )
        self.start_sse()

        def chunk(delta, finish_reason=None):
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

        self.sse(chunk({"role": "assistant", "content": ""}))
        for line in text.splitlines(keepends=True):
            self.sse(chunk({"content": line}))
        for i, c in enumerate(calls):
            self.sse(
                chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function", "function": {"name": c["function"]["name"], "arguments": ""}}]})
            )
            self.sse(chunk({"tool_calls": [{"index": i, "function": {"arguments": c["function"]["arguments"]}}]}))
        self.sse(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            self.sse({**chunk({}), "choices": [], "usage": full_usage})
        self.sse("[DONE]")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=18080, help="port on 127.0.0.1 (0: any free port; default 18080)")
    ap.add_argument("--script", help="script to play when no [script:NAME] tag is in the conversation")
    ap.add_argument("--scripts", action="append", default=[], help="another folder of <name>.json scripts (searched first)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to sleep before each streamed event")
    ap.add_argument("--jitter", type=float, default=0.0,
                    help="each model request sleeps an extra uniform 0..S seconds before its first event")
    ap.add_argument("--seed", type=int, help="seed for --jitter (repeatable sleeps)")
    ap.add_argument("--log", help="append one JSON line per request here (default stderr)")
    args = ap.parse_args(argv)
    STATE.delay = args.delay
    STATE.set_jitter(args.jitter, args.seed)
    STATE.script_dirs = [Path(d) for d in args.scripts] + [HERE / "scripts"]
    if args.log:
        STATE.log_file = open(args.log, "a", buffering=1)
    if args.script:
        try:
            if STATE.script(args.script) is None:
                sys.exit(f"mock-llm: no script {args.script!r} in {', '.join(map(str, STATE.script_dirs))}")
        except ScriptError as e:
            sys.exit(f"mock-llm: {e}")
        STATE.default_script = args.script
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    STATE.log({"note": f"listening on 127.0.0.1:{port}", "delay": args.delay, "jitter": args.jitter,
               "seed": args.seed, "script": args.script})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
