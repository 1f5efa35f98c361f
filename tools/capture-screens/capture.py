#!/usr/bin/env python3
"""Capture screen fixtures from the real agent CLIs, offline, in tmux.

For each agent (claude-code, codex, gemini, aider) this script:
  * makes a fresh HOME and a fresh git work dir under --base (default
    /tmp/architect-capture/<profile>/), writes the CLI's config pointing at the mock
    model server (tools/mock-llm/mock_llm.py, started here on 127.0.0.1:--port);
  * starts the CLI in a tmux pane of the profile's [terminal] size (private tmux socket
    "architect-capture"), with `env -i` plus the profile's [env] plus what the CLI needs;
  * answers the first-run screens with the profile's own [[startup.rules]] (so the rules
    are tried for real), saving each first-run screen as startup__<name>.txt;
  * plays the script: "Say hello" (plain reply), then "Please create the file
    made-by-agent.txt" (a shell-command tool call that needs permission; approved),
    with the server slowed down (--delay) so busy screens stay up long enough;
  * saves idle__/busy__/waiting_input__ fixtures into tests/fixtures/screens/<profile>/,
    and next to each waiting_input__<desc>.txt of a profile with [[permission]] rules a
    waiting_input__<desc>.action.json: the kind and action the model asked for, and what
    the profile reads off the screen (checked by tests/profiles/mod.rs);
  * ends the tmux session and every process still running with that HOME (Codex leaves
    an app-server daemon, Gemini survives its terminal closing).

Unless --no-netns is given, everything (mock server, tmux server, CLIs) runs inside a
new network namespace that has only loopback (`unshare -n`, or `unshare -rn` when not
root), so nothing can reach the network even if a CLI tries.

A saved screen is `tmux capture-pane -p` with trailing spaces removed from every row
and trailing empty rows removed (what architect's Screen::text gives), plus one final
newline in the file.

  python3 tools/capture-screens/capture.py --clis /tmp/agent-clis            # all agents
  python3 tools/capture-screens/capture.py --clis /tmp/agent-clis codex      # one agent
  python3 tools/capture-screens/capture.py --permissions                     # permission screens
  python3 tools/capture-screens/capture.py --check                           # classify fixtures

--permissions plays the mock's `permissions` script instead (Claude Code: with file
writes, an edit, a read outside the work dir, a fetch and two parallel calls added): a
permission question for a safe command, one to escalate (npm install: answered no), a
long one that wraps, a dangerous one (sudo rm -rf: no), a multi-line one, each answered
with the keys of the profile's [[permission]] rule (after a no, "go on" is sent: all
three CLIs end the turn there), saving each question as waiting_input__<desc>.txt +
.action.json. Only claude-code, codex and gemini.

--check classifies every fixture with the profiles' regexes (ported to Python's `re`)
and prints the result, for when the Rust tests cannot be built.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MOCK_LLM = ROOT / "tools" / "mock-llm" / "mock_llm.py"
FIXTURES = ROOT / "tests" / "fixtures" / "screens"
PROFILES = ROOT / "config" / "profiles"
SOCKET = "architect-capture"

HELLO_PROMPT = "Say hello"
HELLO_REPLY = "Hello from the mock model."
TOOL_PROMPT = "Please create the file made-by-agent.txt"
FINAL_REPLY = "All done: created made-by-agent.txt"


# ---------------------------------------------------------------- regex helpers --------
def py_regex(rust: str) -> re.Pattern:
    """The profile regexes use Rust `regex` syntax with multi-line mode; the subset they
    use maps onto Python's `re` except for `\\z` (Python: `\\Z`)."""
    return re.compile(rust.replace(r"\z", r"\Z"), re.MULTILINE)


class Profile:
    def __init__(self, name: str):
        self.name = name
        self.spec = tomllib.loads((PROFILES / f"{name}.toml").read_text())
        scr = self.spec["screen"]
        self.idle = py_regex(scr["idle"])
        self.busy = py_regex(scr["busy"]) if scr.get("busy") else None
        self.waiting = py_regex(scr["waiting_input"]) if scr.get("waiting_input") else None
        self.rules = [
            (py_regex(r["when"]), r["send"], r.get("times", 3))
            for r in self.spec.get("startup", {}).get("rules", [])
        ]
        reply = self.spec.get("result", {}).get("reply")
        self.reply_re = py_regex(reply) if reply else None
        self.permissions = [
            (py_regex(r["when"]), py_regex(r["action"]), r) for r in self.spec.get("permission", [])
        ]
        term = self.spec.get("terminal", {})
        self.cols = term.get("cols", 120)
        self.rows = term.get("rows", 40)
        self.env = self.spec.get("env", {})

    def classify(self, screen: str) -> str | None:
        if self.waiting and self.waiting.search(screen):
            return "waiting_input"
        if self.busy and self.busy.search(screen):
            return "busy"
        if self.idle.search(screen):
            return "idle"
        return None

    def reply(self, screen: str) -> str | None:
        if not self.reply_re:
            return None
        matches = list(self.reply_re.finditer(screen))
        return matches[-1].group(1).rstrip() if matches else None

    def permission_request(self, screen: str) -> dict | None:
        """Profile::permission_request ported: the first rule whose `when` matches; the
        action is the `action` group of the last match of `action`, rows trimmed and
        joined with "\n" (None when empty or not found)."""
        for when, action_re, spec in self.permissions:
            if not when.search(screen):
                continue
            matches = list(action_re.finditer(screen))
            action = tool = None
            if matches:
                m = matches[-1]
                if m.group("action") is not None:
                    action = "\n".join(r.strip() for r in m.group("action").split("\n")).strip() or None
                if "tool" in action_re.groupindex and m.group("tool") is not None:
                    tool = m.group("tool").strip()
            return {"name": spec["name"], "kind": spec["kind"], "action": action, "tool": tool,
                    "yes": spec["yes"], "no": spec["no"]}
        return None

    def rule_for(self, screen: str):
        for i, (rx, send, times) in enumerate(self.rules):
            if rx.search(screen):
                return i, send, times
        return None


# ---------------------------------------------------------------- tmux ---------------
def tmux(*args: str, check: bool = True) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=check).stdout


def normalize(text: str) -> str:
    rows = [r.rstrip(" ") for r in text.split("\n")]
    while rows and rows[-1] == "":
        rows.pop()
    return "\n".join(rows)


class Pane:
    def __init__(self, name: str, argv: list[str], env: dict, cwd: Path, cols: int, rows: int):
        self.name = name
        cmd = shlex.join(["env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv])
        tmux("kill-session", "-t", name, check=False)
        tmux("new-session", "-d", "-s", name, "-x", str(cols), "-y", str(rows), "-c", str(cwd))
        tmux("set-option", "-t", name, "remain-on-exit", "on")
        tmux("respawn-pane", "-k", "-t", name, "-c", str(cwd), cmd)

    def screen(self) -> str:
        return normalize(tmux("capture-pane", "-p", "-t", self.name))

    def send_bytes(self, data: str):
        """Writes `data` as raw bytes, as architect does (one write per call)."""
        hexes = [f"{b:02x}" for b in data.encode()]
        tmux("send-keys", "-t", self.name, "-H", *hexes)

    def paste(self, text: str):
        """Bracketed paste (tmux wraps it in ESC[200~ … ESC[201~ when the program asked)."""
        tmux("set-buffer", "-b", "capture", text)
        tmux("paste-buffer", "-p", "-d", "-b", "capture", "-t", self.name)

    def kill(self):
        tmux("kill-session", "-t", self.name, check=False)


class Timeout(Exception):
    pass


def wait_for(pane: Pane, pred, what: str, timeout: float = 90, stable: float = 0.0, poll: float = 0.25) -> str:
    """Polls until pred(screen) holds (and the screen stayed the same for `stable` s)."""
    deadline = time.time() + timeout
    last, since = None, time.time()
    while time.time() < deadline:
        s = pane.screen()
        if s != last:
            last, since = s, time.time()
        if pred(s) and time.time() - since >= stable:
            return s
        time.sleep(poll)
    raise Timeout(f"timed out waiting for {what}; screen was:\n{last}")


# ---------------------------------------------------------------- capture context -----
class Capture:
    def __init__(self, args):
        self.args = args
        self.base = Path(args.base)
        self.port = args.port
        self.saved: list[Path] = []

    def mock(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return json.load(r)

    def delay(self, seconds: float):
        self.mock(f"/_mock/delay?s={seconds}")

    def dirs(self, profile: str) -> tuple[Path, Path]:
        root = self.base / profile
        if root.exists():
            shutil.rmtree(root)
        home, work = root / "home", root / "work"
        home.mkdir(parents=True)
        work.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", str(work)], check=True)
        subprocess.run(["git", "-C", str(work), "config", "user.email", "capture@example.invalid"], check=True)
        subprocess.run(["git", "-C", str(work), "config", "user.name", "capture"], check=True)
        return home, work

    def save(self, profile: Profile, state: str, desc: str, screen: str, expect: str | None = None,
             requested: tuple[str, str] | None = None):
        """Writes a fixture. For a waiting_input screen of a profile with [[permission]]
        rules, `requested` = (kind, action) the model asked for is written next to it as
        <name>.action.json, with what the profile reads ("read": the action, or null)."""
        if expect is not None:
            got = profile.classify(screen)
            if got != expect:
                print(f"  !! {profile.name} {state}__{desc}: classifies as {got}, not {expect}", file=sys.stderr)
        out = Path(self.args.out) / profile.name / f"{state}__{desc}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(screen + "\n")
        self.saved.append(out)
        print(f"  saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
        if state == "waiting_input" and profile.permissions and requested:
            kind, action = requested
            req = profile.permission_request(screen)
            read = req["action"] if req else None
            if req is None:
                print(f"  !! {desc}: no [[permission]] rule matches", file=sys.stderr)
            elif req["kind"] != kind:
                print(f"  !! {desc}: read as kind {req['kind']}, asked for {kind}", file=sys.stderr)
            if read is not None and read != action and "\n" not in read:
                print(f"  !! {desc}: UNSAFE: reads {read!r} for {action!r}", file=sys.stderr)
            elif read != action:
                print(f"  note {desc}: reads {read!r} (escalated), not {action!r}")
            side = out.with_name(out.name.removesuffix(".txt") + ".action.json")
            side.write_text(json.dumps({"kind": kind, "requested": action, "read": read}, indent=2, ensure_ascii=False) + "\n")

    def start(self, profile: Profile, argv: list[str], extra_env: dict, home: Path, work: Path) -> Pane:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            **profile.env,
            **extra_env,
        }
        return Pane(profile.name, argv, env, work, profile.cols, profile.rows)

    def startup(self, pane: Pane, profile: Profile, names: list[tuple[str, str]], timeout: float = 120) -> str:
        """Answers first-run screens with the profile's startup rules until the screen is
        idle. `names` maps a Python regex over the screen to the fixture name to save it
        under (the first match wins; each name is saved once)."""
        fired: dict[int, int] = {}
        seen: set[str] = set()
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = wait_for(pane, lambda s: bool(s.strip()), "any output", timeout=60, stable=1.5)
            hit = profile.rule_for(s)
            if hit is None:
                if profile.classify(s) == "idle":
                    return s
                time.sleep(0.5)
                continue
            idx, send, times = hit
            for rx, name in names:
                if name not in seen and re.search(rx, s, re.MULTILINE):
                    seen.add(name)
                    if profile.classify(s) == "idle":
                        print(f"  !! startup screen {name} classifies as idle", file=sys.stderr)
                    self.save(profile, "startup", name, s)
                    break
            fired[idx] = fired.get(idx, 0) + 1
            if fired[idx] > times:
                raise Timeout(f"startup rule {idx} fired more than {times} times; screen:\n{s}")
            print(f"  startup rule {idx} -> {send!r}")
            pane.send_bytes(send)
            try:
                wait_for(pane, lambda t, s=s: t != s, "the screen to change after a startup rule", timeout=10)
            except Timeout:
                pass
        raise Timeout("startup did not reach idle")

    def submit(self, pane: Pane, profile: Profile, text: str):
        pause = profile.spec.get("submit", {}).get("pause_ms", 100) / 1000
        pane.paste(text)
        time.sleep(max(pause, 0.3))
        pane.send_bytes(profile.spec.get("submit", {}).get("enter", "\r"))

    def cleanup(self, pane: Pane | None, home: Path):
        if pane:
            pane.kill()
        time.sleep(1)
        kill_under_home(home)


def kill_under_home(home: Path):
    """Ends every process whose environment has HOME=<home> (only this script starts such)."""
    needle = f"HOME={home}".encode()
    victims = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env:
            victims.append(int(pid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not victims:
            break
        time.sleep(2)
        victims = [p for p in victims if Path(f"/proc/{p}").exists() and not is_zombie(p)]
    if victims:
        print(f"  !! still running under {home}: {victims}", file=sys.stderr)


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


# ---------------------------------------------------------------- the script -----------
def play_turns(cap: Capture, pane: Pane, p: Profile, a: dict):
    """The common script after start-up. `a` holds the agent-specific predicates."""
    # 1. A plain reply.
    cap.delay(0)
    cap.submit(pane, p, HELLO_PROMPT)
    s = wait_for(pane, lambda s: HELLO_REPLY in s and a["done"](s), "the hello reply", stable=2.0)
    cap.save(p, "idle", "after-reply", s, "idle")

    # 2. A tool call needing permission, slowed down so busy screens can be captured.
    cap.delay(cap.args.delay)
    cap.submit(pane, p, TOOL_PROMPT)
    wait_for(pane, a["busy"], "the busy screen", timeout=30)
    time.sleep(1.0)
    s = wait_for(pane, a["busy"], "the busy screen", timeout=10)
    cap.save(p, "busy", a.get("busy_name", "thinking"), s, "busy")

    s = wait_for(pane, a["waiting"], "the permission screen", timeout=120, stable=1.0)
    cap.save(p, "waiting_input", a["waiting_name"], s, "waiting_input", ("command", "touch made-by-agent.txt"))
    req = p.permission_request(s)
    # The profile's own "yes" keys when it has [[permission]] rules (so they are tried).
    for keys in [req["yes"]] if req else a["approve"]:
        pane.send_bytes(keys)
        time.sleep(0.3)

    if "after_approval" in a:
        s = wait_for(pane, a["after_approval"], "busy after approval", timeout=60)
        cap.save(p, "busy", "after-approval", s, "busy")
    if "streaming" in a:
        s = wait_for(pane, a["streaming"], "the reply streaming", timeout=120, poll=0.2)
        cap.save(p, "busy", "reply-streaming", s, "busy")

    s = wait_for(pane, a["final"], "idle after the tool turn", timeout=120, stable=2.0)
    cap.save(p, "idle", a.get("final_name", "after-tool-reply"), s, "idle")


def run_claude(cap: Capture):
    p = Profile("claude-code")
    home, work = cap.dirs(p.name)
    # Onboarding done (else it calls api.anthropic.com); the folder is NOT trusted and the
    # API key NOT approved, so both first-run dialogs show.
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    binary = str(Path(cap.args.clis) / "node_modules" / ".bin" / "claude")
    env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{cap.port}", "ANTHROPIC_API_KEY": "sk-mock-capture-0000"}
    pane = None
    try:
        pane = cap.start(p, [binary], env, home, work)
        s = cap.startup(
            pane,
            p,
            [
                (r"Yes, I trust this folder", "trust-folder"),
                (r"API key\?\n\n +1\. Yes\n *❯ 2\. No", "custom-api-key"),
                (r"API key\?\n\n *❯ 1\. Yes", "custom-api-key-yes-selected"),
            ],
        )
        s = wait_for(pane, lambda s: p.classify(s) == "idle" and "? for shortcuts" in s, "idle", stable=2.0)
        cap.save(p, "idle", "fresh-start", s, "idle")
        busy = lambda s: bool(re.search(r"^ *esc to interrupt", s, re.M))
        play_turns(
            cap,
            pane,
            p,
            {
                "done": lambda s: not busy(s) and "? for shortcuts" in s,
                "busy": lambda s: busy(s) and "Bash(" not in s,
                "waiting": lambda s: "Do you want to proceed?" in s,
                "waiting_name": "bash-touch",
                "approve": ["\r"],
                # Claude puts a no-break space after "⎿".
                "after_approval": lambda s: busy(s) and bool(re.search(r"⎿\s+Done", s)) and FINAL_REPLY not in s,
                "streaming": lambda s: busy(s) and f"● {FINAL_REPLY}" in s,
                "final": lambda s: not busy(s) and f"● {FINAL_REPLY}" in s and "? for shortcuts" in s,
            },
        )
        assert (work / "made-by-agent.txt").exists(), "the command did not run"
    finally:
        cap.cleanup(pane, home)


def codex_config(port: int) -> str:
    return (
        'model = "mock-model"\n'
        'model_provider = "mock"\n\n'
        "[model_providers.mock]\n"
        'name = "Mock"\n'
        f'base_url = "http://127.0.0.1:{port}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "MOCK_API_KEY"\n'
    )


def run_codex(cap: Capture):
    p = Profile("codex")
    home, work = cap.dirs(p.name)
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_text(codex_config(cap.port))
    binary = str(Path(cap.args.clis) / "node_modules" / ".bin" / "codex")
    pane = None
    try:
        pane = cap.start(p, [binary], {"MOCK_API_KEY": "sk-mock-capture-0000"}, home, work)
        # For its first seconds Codex shows its logo and an empty composer with only
        # "? for shortcuts" under it (no status row), then the trust dialog: that screen
        # must not read as idle.
        s = wait_for(
            pane,
            lambda s: bool(re.search(r"^› Ask Codex to do anything\n\n  \? for shortcuts\Z", s, re.M)),
            "the loading screen",
            timeout=30,
            poll=0.1,
        )
        cap.save(p, "busy", "loading-before-trust", s, "busy")
        cap.startup(pane, p, [(r"Trust and continue", "trust-folder")])
        # After the trust screen Codex animates a logo for a few seconds.
        s = wait_for(pane, lambda s: p.classify(s) == "idle", "idle", stable=2.0)
        cap.save(p, "idle", "fresh-start", s, "idle")
        working = lambda s: "esc to interrupt)" in s

        def streaming(s):
            i = s.rfind(f"• {FINAL_REPLY}")
            return i >= 0 and "Worked for" not in s[i:] and not working(s)

        play_turns(
            cap,
            pane,
            p,
            {
                "done": lambda s: "Worked for" in s and not working(s),
                "busy": lambda s: working(s) and "Running" not in s,
                "waiting": lambda s: "Would you like to run the following command?" in s,
                "waiting_name": "exec-touch",
                "approve": ["\r"],
                "after_approval": lambda s: working(s) and "• Ran touch" in s,
                "streaming": streaming,
                "final": lambda s: f"• {FINAL_REPLY}" in s and "Worked for" in s[s.rfind(FINAL_REPLY) :],
            },
        )
        assert (work / "made-by-agent.txt").exists(), "the command did not run"
    finally:
        cap.cleanup(pane, home)


def run_gemini(cap: Capture):
    p = Profile("gemini")
    home, work = cap.dirs(p.name)
    (home / ".gemini").mkdir()
    (home / ".gemini" / "settings.json").write_text(
        json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}})
    )
    binary = str(Path(cap.args.clis) / "node_modules" / ".bin" / "gemini")
    env = {"GEMINI_API_KEY": "mock-capture-0000", "GOOGLE_GEMINI_BASE_URL": f"http://127.0.0.1:{cap.port}"}
    pane = None
    try:
        pane = cap.start(p, [binary, "-m", "gemini-2.5-flash"], env, home, work)
        cap.startup(pane, p, [(r"Do you trust the files in this folder\?", "trust-folder")])
        s = wait_for(pane, lambda s: p.classify(s) == "idle", "idle", stable=2.0)
        cap.save(p, "idle", "fresh-start", s, "idle")
        busy = lambda s: "(esc to cancel" in s
        play_turns(
            cap,
            pane,
            p,
            {
                "done": lambda s: not busy(s) and p.classify(s) == "idle",
                "busy": lambda s: busy(s) and "Shell" not in s,
                "waiting": lambda s: "Allow execution of" in s,
                "waiting_name": "shell-touch",
                "approve": ["\r"],
                "after_approval": lambda s: busy(s) and "✓  Shell" in s and "✦ All" not in s,
                "streaming": lambda s: busy(s) and "✦ All done" in s,
                "final": lambda s: not busy(s) and f"✦ {FINAL_REPLY}" in s and p.classify(s) == "idle",
            },
        )
        assert (work / "made-by-agent.txt").exists(), "the command did not run"
    finally:
        cap.cleanup(pane, home)


def run_aider(cap: Capture):
    p = Profile("aider")
    home, work = cap.dirs(p.name)
    binary = cap.args.aider or str(Path(cap.args.clis) / "aider-venv" / "bin" / "aider")
    env = {"OPENAI_API_KEY": "sk-mock-capture-0000", "OPENAI_API_BASE": f"http://127.0.0.1:{cap.port}/v1"}
    pane = None
    try:
        pane = cap.start(p, [binary, "--model", "openai/mock-model", "--edit-format", "diff"], env, home, work)
        cap.startup(
            pane,
            p,
            [
                (r"Add \.aider\* to \.gitignore[^\n]*\[Yes\]:\Z", "add-gitignore"),
                (r"Open documentation url for more info\?[^\n]*\[Yes\]:\Z", "model-warning-docs"),
                (r"Would you like to see what's new in this version\?[^\n]*\[Yes\]:\Z", "release-notes"),
                (r"\[Yes\]: n\Z", "answered-no"),
            ],
        )
        s = wait_for(pane, lambda s: p.classify(s) == "idle", "idle", stable=2.0)
        cap.save(p, "idle", "fresh-start", s, "idle")
        play_turns(
            cap,
            pane,
            p,
            {
                "done": lambda s: p.classify(s) == "idle",
                "busy": lambda s: bool(re.search(r"Waiting for [^\n]*\Z", s)),
                "busy_name": "waiting-for-model",
                "waiting": lambda s: bool(re.search(r"Run shell command\?[^\n]*\[Yes\]:\Z", s)),
                "waiting_name": "run-shell-command",
                "approve": ["y", "\r"],
                "final": lambda s: "Running touch made-by-agent.txt" in s and p.classify(s) == "idle",
                "final_name": "after-shell-command",
            },
        )
        assert (work / "made-by-agent.txt").exists(), "the command did not run"
    finally:
        cap.cleanup(pane, home)



# ---------------------------------------------------------------- permission screens ---
PERMISSIONS_SCRIPT = json.loads((ROOT / "tools" / "mock-llm" / "scripts" / "permissions.json").read_text())
GO_ON = "go on"


def permission_steps(agent: str, work: Path) -> tuple[str, dict | None, list[dict]]:
    """(script name, script to post or None, the questions expected in order).

    Each step: the script turn that asks, the fixture name, yes/no, and (kind, action)
    the model asks for. Turn 0 (touch made-by-agent.txt) is not saved: the default run
    saves that question already. Gemini CLI plays the permissions script as it is (yes,
    no, yes, no, yes: it loses count after two refusals in a row); Claude Code and Codex
    get the sudo question right after npm's, so that it is the first command of its
    turn (Claude Code reads a command exactly only when no command of the same turn
    before it took several rows), and Claude Code gets its file tools too."""
    t = PERMISSIONS_SCRIPT["turns"]
    tool = {"claude-code": "bash", "codex": "exec", "gemini": "shell"}[agent]
    names = {0: None, 1: "escalate", 2: "long-wraps", 3: "sudo", 4: "multiline"}
    order = [0, 1, 2, 3, 4] if agent == "gemini" else [0, 1, 3, 2, 4]
    turns, steps = [], []
    for i in order:
        answer = "no" if i in (1, 3) else "yes"
        name = f"{tool}-{names[i]}" if names[i] else None
        steps.append({"turn": len(turns), "name": name, "answer": answer, "kind": "command", "action": t[i]["shell"]})
        turns.append(t[i])
    if agent == "gemini":
        return "permissions", None, steps
    if agent == "claude-code":
        # Claude Code's file tools (its Write tool wants an absolute path): a new file, one
        # whose question wraps, a read outside the work dir, an edit and a fetch.
        long_name = ("sub dir/a file name long enough that the question about it wraps over the width of "
                     "a terminal of 120 columns.txt")
        extra = [
            ({"tool": "Write", "input": {"file_path": str(work / "notes.txt"), "content": "first line\nsecond line\n"}},
             {"name": "write-new-file", "answer": "yes", "kind": "edit", "action": "notes.txt"}),
            ({"tool": "Write", "input": {"file_path": str(work / long_name), "content": "x\n"}},
             {"name": "write-long-path", "answer": "yes", "kind": "edit", "action": long_name}),
            ({"tool": "Read", "input": {"file_path": "/etc/hostname"}},
             {"name": "read-outside-workdir", "answer": "yes", "kind": "read", "action": "/etc/hostname"}),
            ({"tool": "Read", "input": {"file_path": str(work / "notes.txt")}}, None),  # inside: no question
            ({"tool": "Edit", "input": {"file_path": str(work / "notes.txt"), "old_string": "first line",
                                        "new_string": "changed line"}},
             {"name": "edit-file", "answer": "no", "kind": "edit", "action": "notes.txt"}),
            ({"tool": "WebFetch", "input": {"url": "https://example.com/page", "prompt": "Summarize the page"}},
             {"name": "fetch-url", "answer": "no", "kind": "fetch", "action": "https://example.com/page"}),
        ]
        for turn, step in extra:
            if step:
                steps.append({"turn": len(turns), **step})
            turns.append(turn)
        # Two calls at once, the multi-line one first: Claude Code asks about the first
        # while the header right above its dialog is the second's.
        multi, single = "printf 'x\\n' > parallel.txt\necho y >> parallel.txt", "touch parallel-2.txt"
        steps.append({"turn": len(turns), "name": "bash-parallel-first", "answer": "yes", "kind": "command", "action": multi})
        steps.append({"turn": len(turns), "name": "bash-parallel-second", "answer": "yes", "kind": "command", "action": single})
        turns.append({"calls": [{"shell": multi, "description": "two lines"}, {"shell": single, "description": "one line"}]})
    turns.append(t[-1])
    name = f"permissions-{agent}"
    return name, {"description": f"the permissions script as played for {agent}", "turns": turns}, steps


def play_permissions(cap: Capture, pane: Pane, p: Profile, work: Path, final: str = "All done."):
    agent = p.name
    name, script, steps = permission_steps(agent, work)
    if script:
        req = urllib.request.Request(f"http://127.0.0.1:{cap.port}/_mock/scripts/{name}",
                                     data=json.dumps(script).encode(), method="POST")
        urllib.request.urlopen(req, timeout=5).read()
    cap.delay(0)
    cap.mock("/_mock/requests")  # (reachable)
    cap.submit(pane, p, f"[script:{name}] Please run the commands")
    for step in steps:
        # (Not "stable": Claude Code blinks the "●" of a running tool.)
        wait_for(pane, lambda s: p.classify(s) == "waiting_input", f"question {step['turn']}", timeout=120)
        time.sleep(1.5)
        s = wait_for(pane, lambda s: p.classify(s) == "waiting_input", f"question {step['turn']}", timeout=10)
        played = [r for r in cap.mock("/_mock/requests")["requests"] if r.get("script") == name]
        turn = played[-1]["turn"] if played else None
        if turn != step["turn"]:
            raise Timeout(f"expected the question of turn {step['turn']}, the mock last played turn {turn}; screen:\n{s}")
        if step["name"]:
            cap.save(p, "waiting_input", step["name"], s, "waiting_input", (step["kind"], step["action"]))
        req = p.permission_request(s)
        if req is None:
            raise Timeout(f"no [[permission]] rule matches the question of turn {step['turn']}:\n{s}")
        keys = req[step["answer"]]
        print(f"  turn {step['turn']}: {req['name']} {req['kind']} {req['action']!r} -> {step['answer']} {keys!r}")
        pane.send_bytes(keys)
        wait_for(pane, lambda t, s=s: t != s, "the question to go", timeout=20)
        if step["answer"] == "no":
            # All three end the turn on a refusal: wait for the input box, then go on.
            s = wait_for(pane, lambda s: p.classify(s) == "idle", "idle after the refusal", timeout=60, stable=1.5)
            print(f"  refused; screen ends: {s.splitlines()[-8:]}")
            cap.submit(pane, p, GO_ON)
    s = wait_for(pane, lambda s: p.classify(s) == "idle" and p.reply(s) == final, "the final reply", timeout=120, stable=2.0)
    cap.save(p, "idle", "after-permissions", s, "idle")
    return s


def run_permissions(cap: Capture, agent: str):
    p = Profile(agent)
    home, work = cap.dirs(p.name)
    bins = Path(cap.args.clis) / "node_modules" / ".bin"
    if agent == "claude-code":
        (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
        argv = [str(bins / "claude")]
        env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{cap.port}", "ANTHROPIC_API_KEY": "sk-mock-capture-0000"}
    elif agent == "codex":
        (home / ".codex").mkdir()
        (home / ".codex" / "config.toml").write_text(codex_config(cap.port))
        argv = [str(bins / "codex")]
        env = {"MOCK_API_KEY": "sk-mock-capture-0000"}
    else:
        (home / ".gemini").mkdir()
        (home / ".gemini" / "settings.json").write_text(json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}}))
        argv = [str(bins / "gemini"), "-m", "gemini-2.5-flash"]
        env = {"GEMINI_API_KEY": "mock-capture-0000", "GOOGLE_GEMINI_BASE_URL": f"http://127.0.0.1:{cap.port}"}
    pane = None
    try:
        pane = cap.start(p, argv, env, home, work)
        cap.startup(pane, p, [])
        wait_for(pane, lambda s: p.classify(s) == "idle", "idle", stable=2.0)
        play_permissions(cap, pane, p, work)
        made = sorted(x.name for x in work.iterdir() if not x.name.startswith("."))
        print(f"  work dir now holds: {made}")
        for f in ("made-by-agent.txt", "long.txt", "multi.txt"):
            assert (work / f).exists(), f"{f} was not made: an approved command did not run"
        assert (work / "multi.txt").read_text() == "one\ntwo\n", "the multi-line command ran wrong"
        if agent == "claude-code":
            assert (work / "notes.txt").read_text() == "first line\nsecond line\n", "the refused edit was applied"
    finally:
        cap.cleanup(pane, home)


AGENTS = {"claude-code": run_claude, "codex": run_codex, "gemini": run_gemini, "aider": run_aider}
PERMISSION_AGENTS = ["claude-code", "codex", "gemini"]


# ---------------------------------------------------------------- check mode ----------
def check(out: Path) -> int:
    bad = 0
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        prof = Profile(d.name)
        for f in sorted(d.glob("*.txt")):
            screen = f.read_text().removesuffix("\n")
            state = f.name.split("__", 1)[0]
            got = prof.classify(screen)
            if state == "startup":
                ok = prof.rule_for(screen) is not None and got != "idle"
                note = f"rule {prof.rule_for(screen)[0] if prof.rule_for(screen) else None}, classify {got}"
            else:
                ok = got == state
                note = f"classify {got}"
            reply = prof.reply(screen) if state == "idle" else None
            if reply is not None:
                note += f", reply {reply!r}"
            side = f.with_name(f.name.removesuffix(".txt") + ".action.json")
            if state == "waiting_input" and side.exists():
                want = json.loads(side.read_text())
                req = prof.permission_request(screen) or {}
                got = (req.get("kind"), req.get("action"))
                if got != (want["kind"], want["read"]):
                    ok = False
                    note += f", permission read {got!r}, expected {(want['kind'], want['read'])!r}"
                else:
                    note += f", permission {req.get('name')} {got[1]!r}"
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {d.name}/{f.name}: {note}")
    return 1 if bad else 0


# ---------------------------------------------------------------- main -----------------
def enter_netns():
    """Re-runs this script in a new network namespace with only loopback (up)."""
    if os.environ.get("ARCHITECT_CAPTURE_NETNS") == "1":
        return
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    inner = "ip link set lo up && exec \"$@\""
    env = {**os.environ, "ARCHITECT_CAPTURE_NETNS": "1"}
    cmd = [*unshare, "sh", "-c", inner, "sh", sys.executable, *sys.argv]
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as e:
        sys.exit(f"cannot enter a network namespace ({e}); rerun with --no-netns")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("agents", nargs="*", help=f"which to capture (default all): {', '.join(AGENTS)}")
    ap.add_argument("--clis", default="/tmp/agent-clis", help="folder holding node_modules/.bin/{claude,codex,gemini} and aider-venv/")
    ap.add_argument("--aider", help="aider executable (default <clis>/aider-venv/bin/aider)")
    ap.add_argument("--base", default="/tmp/architect-capture", help="where fresh HOMEs and work dirs are made")
    ap.add_argument("--out", default=str(FIXTURES), help="fixture folder (default tests/fixtures/screens)")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--delay", type=float, default=2.0, help="mock server delay per streamed event in the tool turn")
    ap.add_argument("--no-netns", action="store_true", help="do not isolate the network (not recommended)")
    ap.add_argument("--check", action="store_true", help="only classify the existing fixtures")
    ap.add_argument("--permissions", action="store_true",
                    help="capture the permission questions of the mock's permissions script (claude-code, codex, gemini)")
    args = ap.parse_args()

    if args.check:
        sys.exit(check(Path(args.out)))
    known = PERMISSION_AGENTS if args.permissions else list(AGENTS)
    agents = args.agents or known
    for a in agents:
        if a not in known:
            sys.exit(f"unknown agent {a!r}; known: {', '.join(known)}")
    if not args.no_netns:
        enter_netns()

    cap = Capture(args)
    log = Path(args.base) / "mock-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, str(MOCK_LLM), "--port", str(args.port), "--log", str(log)],
        stdin=subprocess.DEVNULL,
    )
    failed = []
    try:
        wait_until = time.time() + 10
        while True:
            try:
                cap.mock("/_mock/health")
                break
            except OSError:
                if time.time() > wait_until:
                    raise
                time.sleep(0.2)
        tmux("kill-server", check=False)
        for a in agents:
            print(f"== {a}")
            try:
                if args.permissions:
                    run_permissions(cap, a)
                else:
                    AGENTS[a](cap)
            except (Timeout, AssertionError, subprocess.CalledProcessError) as e:
                print(f"  FAILED: {e}", file=sys.stderr)
                failed.append(a)
    finally:
        tmux("kill-server", check=False)
        server.terminate()
        server.wait(timeout=10)
    print(f"saved {len(cap.saved)} screens; mock server log: {log}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
