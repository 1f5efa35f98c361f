//! Agent profiles: how to read one kind of agent terminal and how to drive it.
//!
//! A profile is data (`config/profiles/<name>.toml`), not code: a CLI that changes its
//! prompt text is a config edit, not a release. The built-in profiles (`shell`,
//! `fake-agent`, `claude-code`, `codex`, `gemini`, `aider`, `ollama`) ship inside the
//! binary and are written out by `architect init`; a file in `config/profiles/` with the
//! same name wins.
//!
//! Screen regexes use the [`regex`] crate's syntax and are matched against the
//! *rendered* screen ([`crate::session::screen::Screen::text`]): one line per terminal row,
//! trailing spaces removed, trailing empty rows removed, rows joined with `\n`. Multi-line
//! mode is on, so `^`/`$` match at row boundaries and `\z` at the end of the last
//! non-empty row.

use std::collections::BTreeMap;
use std::path::Path;

use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::extract::{self, Extractor};

/// The state of an agent terminal as read from its screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScreenState {
    /// Ready for a prompt.
    Idle,
    /// Working on a prompt.
    Busy,
    /// Asking a question (permission, y/n) that a person or policy must answer.
    WaitingInput,
}

/// Where a finished task's result text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResultSource {
    /// Everything the program printed after the prompt was submitted, with escape
    /// sequences removed (right for line-oriented programs such as a shell).
    #[default]
    Transcript,
    /// The rendered screen at completion (right for full-screen TUIs that redraw).
    Screen,
}

/// How the prompt text is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubmitMode {
    /// Typed as plain keystrokes; newlines in the prompt become [`SubmitSpec::newline`].
    #[default]
    Typed,
    /// Wrapped in bracketed-paste markers (`ESC[200~ … ESC[201~`), newlines kept.
    BracketedPaste,
}

/// On-disk shape of a profile file (`config/profiles/<name>.toml`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// One line saying what program this profile drives.
    #[serde(default)]
    pub description: String,
    /// Default program for sessions of this profile that name no `command`.
    #[serde(default)]
    pub command: Option<String>,
    /// Default arguments, used with the default `command`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Terminal window size.
    #[serde(default)]
    pub terminal: TerminalSpec,
    /// Screen regexes.
    pub screen: ScreenSpec,
    /// First-run screens and start-up keystrokes.
    #[serde(default)]
    pub startup: StartupSpec,
    /// How a prompt is submitted.
    #[serde(default)]
    pub submit: SubmitSpec,
    /// How the end of a task is recognised.
    #[serde(default)]
    pub done: DoneSpec,
    /// How the result is read.
    #[serde(default)]
    pub result: ResultSpec,
    /// How a running task is interrupted (timeout, cancel).
    #[serde(default)]
    pub interrupt: InterruptSpec,
    /// Environment variables every session of this profile gets (session env wins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Permission questions the policy (`config/policy.toml`) may answer, checked in file
    /// order whenever the screen reads `waiting_input`.
    #[serde(default)]
    pub permission: Vec<PermissionSpec>,
    /// Shell integration: the shell prints OSC 133 marks, which end each task exactly.
    #[serde(default)]
    pub shell_integration: Option<ShellIntegration>,
    /// Usage- or rate-limit screens: a session showing one is parked as `limited`.
    #[serde(default)]
    pub limit: Vec<LimitSpec>,
    /// The CLI's hooks: installed per session, they report prompts, tool requests and
    /// turn ends exactly ([`crate::agents`]); the screen stays the fallback.
    #[serde(default)]
    pub hooks: Option<HooksSpec>,
    /// Continuing the conversation after the program died.
    #[serde(default)]
    pub resume: Option<ResumeSpec>,
    /// Extraction patterns for this profile's sessions, on top of the built-in ones
    /// (`config/extract.toml`): `[[extract]]` entries of the same shape
    /// ([`crate::extract::PatternSpec`]); one with a built-in's name replaces it.
    #[serde(default)]
    pub extract: Vec<crate::extract::PatternSpec>,
}

/// `[resume]`: how a restarted session continues its conversation. `{conversation}` in
/// the arguments is the conversation's id.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResumeSpec {
    /// Where the id comes from: `start` (architect picks a UUID and passes it with
    /// `first`) or `hook` (the `SessionStart` hook reports the CLI's own).
    pub id: ResumeId,
    /// Arguments added at a fresh start (with `id = "start"`), after the session's own.
    #[serde(default)]
    pub first: Vec<String>,
    /// Arguments put before the session's own at a restart after the program died.
    pub again: Vec<String>,
}

/// Where a conversation id comes from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResumeId {
    /// architect picks it.
    Start,
    /// The CLI's `SessionStart` hook reports it.
    Hook,
}

/// `[hooks]`: which CLI's hooks to install.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HooksSpec {
    /// `claude-code`, `codex` or `gemini`.
    pub agent: String,
}

/// `[shell_integration]`: the shell prints semantic prompt marks
/// ([`crate::session::marks`]); a task then ends only when its own command-finished mark
/// arrives, with the exit status the mark carries.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShellIntegration {
    /// The shell: only `bash` (4.4 or newer) for now. Its start-up file is written per
    /// session and passed where an argument is exactly `{shell_integration}`.
    pub shell: String,
}

/// One usage-limit screen (`[[limit]]`): when `when` matches text that appeared after
/// the task's prompt, the task goes back to the queue without counting an attempt and
/// the session is `limited` until the reset time the text names (`in 2h 5m`, `in 30s`,
/// `at 3pm`, `at 15:30`), else for `backoff_s`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Regex over the rendered screen.
    pub when: String,
    /// How long to wait when the text names no reset time, in seconds (default 300).
    #[serde(default = "default_limit_backoff")]
    pub backoff_s: u64,
    /// A regex over the screen: a menu the CLI opens after the limit message, closed
    /// with `dismiss` while the session is parked.
    #[serde(default)]
    pub menu: Option<String>,
    /// Keys that close `menu` (TOML escapes as in `[startup]`).
    #[serde(default)]
    pub dismiss: Option<String>,
}

fn default_limit_backoff() -> u64 {
    300
}

/// What a permission question asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Run a shell command line.
    Command,
    /// Create or change a file.
    Edit,
    /// Read a file.
    Read,
    /// Fetch a URL.
    Fetch,
    /// Call some other tool (named by the `tool` group).
    Tool,
}

/// One kind of permission question on an agent's screen (`[[permission]]`).
///
/// When the screen reads `waiting_input` and `when` matches, the text of the group named
/// `action` in the last match of `action` is the requested action (a command line, a
/// path or a URL, per `kind`); each of its rows is trimmed and the rows are joined with
/// `\n`. The policy decides; `yes` or `no` is typed, or the question waits for
/// `architect approve|deny`. A question whose action cannot be read is escalated.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PermissionSpec {
    /// Label in events (`bash`, `edit`, …).
    pub name: String,
    /// What the question asks for.
    pub kind: ActionKind,
    /// Regex over the rendered screen: this question is showing.
    pub when: String,
    /// Regex with a group named `action` (and, for `kind = "tool"`, one named `tool`).
    pub action: String,
    /// Keystrokes that answer yes, once (TOML escapes as in `[startup]`).
    pub yes: String,
    /// Keystrokes that answer no.
    pub no: String,
}

/// A permission question read off a screen by [`Profile::permission_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRequest {
    /// Index into the profile's `permission` list.
    pub index: usize,
    /// The rule's `name`.
    pub name: String,
    /// What it asks for.
    pub kind: ActionKind,
    /// The requested action (command line, path, URL or tool input); `None` when the
    /// question is on screen but its action could not be read.
    pub action: Option<String>,
    /// The tool's name, for `kind = "tool"`.
    pub tool: Option<String>,
}

/// Terminal window size in character cells.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TerminalSpec {
    /// Columns (default 120).
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// Rows (default 40).
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Rows kept after they scroll off the top, for reading a reply taller than the
    /// screen (default 0).
    #[serde(default)]
    pub scrollback: u16,
}

fn default_cols() -> u16 {
    120
}
fn default_rows() -> u16 {
    40
}

impl Default for TerminalSpec {
    fn default() -> Self {
        Self {
            cols: default_cols(),
            rows: default_rows(),
            scrollback: 0,
        }
    }
}

/// Regexes over the rendered screen. `waiting_input` is checked first, then `busy`, then
/// `idle`; a screen that matches none is [`ScreenState::Busy`] while a task runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScreenSpec {
    /// Matches when the program is ready for a prompt.
    pub idle: String,
    /// Matches while the program is working (optional: "not idle" is busy).
    #[serde(default)]
    pub busy: Option<String>,
    /// Matches when the program asks a question that must be answered.
    #[serde(default)]
    pub waiting_input: Option<String>,
    /// The input box, with a group named `text` holding what is typed in it (its last
    /// match is the box). Everything above it is the transcript. Lets the session see
    /// that a prompt was taken (the box emptied) or provably not (the text still there).
    #[serde(default)]
    pub input: Option<String>,
    /// A prompt as the transcript shows it once submitted, with a group named `text`
    /// (its first row). Anchors the reply: only what follows this task's prompt is read.
    #[serde(default)]
    pub prompt_line: Option<String>,
}

/// One start-up rule: when the screen matches `when`, send `send`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StartupRule {
    /// Regex over the rendered screen.
    pub when: String,
    /// Keystrokes to send (TOML escapes: `"\r"` Enter, `"\u001b[A"` Up).
    pub send: String,
    /// Most times this rule may fire during one start (default 3).
    #[serde(default = "default_rule_times")]
    pub times: u32,
}

fn default_rule_times() -> u32 {
    3
}

/// Start-up behaviour.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StartupSpec {
    /// Keystrokes sent once right after the program starts (for example to set a prompt).
    #[serde(default)]
    pub send: Option<String>,
    /// Rules for first-run screens (trust dialogs, API-key questions), checked while starting.
    #[serde(default)]
    pub rules: Vec<StartupRule>,
    /// How long the program may take to reach its idle screen, in ms (default 60000).
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_ms: u64,
}

fn default_ready_timeout() -> u64 {
    60_000
}

impl Default for StartupSpec {
    fn default() -> Self {
        Self {
            send: None,
            rules: Vec::new(),
            ready_timeout_ms: default_ready_timeout(),
        }
    }
}

/// Prompt submission: type the text, pause, send Enter, check that the screen changed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubmitSpec {
    /// Typed or bracketed paste.
    #[serde(default)]
    pub mode: SubmitMode,
    /// Pause between the text and Enter, in ms (default 100). Never text and Enter in one write.
    #[serde(default = "default_pause")]
    pub pause_ms: u64,
    /// The Enter keystroke (default `"\r"`).
    #[serde(default = "default_enter")]
    pub enter: String,
    /// What a newline inside the prompt is typed as in `typed` mode (default a space).
    #[serde(default = "default_newline")]
    pub newline: String,
    /// How long after Enter the prompt must show a sign of being taken (ms, default 2000).
    /// When the input box (`screen.input`) still holds the text then, Enter did not
    /// register and is pressed again (at most twice more); Enter is never pressed again
    /// without that proof.
    #[serde(default = "default_confirm")]
    pub confirm_timeout_ms: u64,
    /// Keystrokes that empty the input box, for a prompt proven not taken (default
    /// none: the text is left there).
    #[serde(default)]
    pub clear: Option<String>,
    /// A task whose program died after its prompt was sent is not sent again (it may
    /// have run): it fails, for a person to retry (default false: it is retried, as a
    /// shell command is).
    #[serde(default)]
    pub at_most_once: bool,
}

fn default_pause() -> u64 {
    100
}
fn default_enter() -> String {
    "\r".into()
}
fn default_newline() -> String {
    " ".into()
}
fn default_confirm() -> u64 {
    2000
}

impl Default for SubmitSpec {
    fn default() -> Self {
        Self {
            mode: SubmitMode::default(),
            pause_ms: default_pause(),
            enter: default_enter(),
            newline: default_newline(),
            confirm_timeout_ms: default_confirm(),
            clear: None,
            at_most_once: false,
        }
    }
}

/// Completion: the screen went busy (or changed) after the prompt, then stayed idle for
/// `debounce_ms`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DoneSpec {
    /// How long the idle screen must stay unchanged, in ms (default 1000).
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    /// Whether a busy screen must be seen before idle counts (default false: any screen
    /// change after submission is enough, which suits programs that finish in a blink).
    #[serde(default)]
    pub require_busy: bool,
    /// With `require_busy`: if no busy screen shows within this many ms after Enter, the
    /// prompt was swallowed (a dialog took it, the program was not ready); the attempt is
    /// interrupted and retried instead of waiting for the task's `timeout_s` (default: no
    /// limit).
    #[serde(default)]
    pub busy_timeout_ms: Option<u64>,
    /// With hooks that work in this session: how long after the screen says the turn is
    /// over to wait for the turn-end hook before ending the task by the screen, in ms
    /// (default 3000).
    #[serde(default = "default_hook_grace")]
    pub hook_grace_ms: u64,
}

fn default_hook_grace() -> u64 {
    3000
}

fn default_debounce() -> u64 {
    1000
}

impl Default for DoneSpec {
    fn default() -> Self {
        Self {
            debounce_ms: default_debounce(),
            require_busy: false,
            busy_timeout_ms: None,
            hook_grace_ms: default_hook_grace(),
        }
    }
}

/// How the result text is read.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResultSpec {
    /// Transcript or screen.
    #[serde(default)]
    pub source: ResultSource,
    /// Regex with one capture group read from the final screen: the exit status of the
    /// prompt (shell: the `$?` shown in the prompt). Non-zero fails the task.
    #[serde(default)]
    pub exit_status: Option<String>,
    /// Drop the first transcript line (the echo of the typed prompt) (default false).
    #[serde(default)]
    pub strip_echo: bool,
    /// Drop transcript lines matching this regex from the end (the next prompt).
    #[serde(default)]
    pub strip_trailing: Option<String>,
    /// Regex with one capture group over the final screen: the agent's reply (the last
    /// match wins), stored as `result.reply`.
    #[serde(default)]
    pub reply: Option<String>,
    /// Regex over a `reply` match's group: matches that are not replies (a tool call's
    /// header drawn like a paragraph) are skipped.
    #[serde(default)]
    pub reply_exclude: Option<String>,
}

/// Interrupting a running task.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterruptSpec {
    /// Keystrokes that interrupt the program (default Ctrl-C, `"\u0003"`).
    #[serde(default = "default_interrupt")]
    pub keys: String,
    /// How long to wait for idle after the keys before the session is killed, in ms
    /// (default 5000).
    #[serde(default = "default_grace")]
    pub grace_ms: u64,
}

fn default_interrupt() -> String {
    "\u{3}".into()
}
fn default_grace() -> u64 {
    5000
}

impl Default for InterruptSpec {
    fn default() -> Self {
        Self {
            keys: default_interrupt(),
            grace_ms: default_grace(),
        }
    }
}

/// A loaded, validated profile with its regexes compiled.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile name (file stem).
    pub name: String,
    /// The parsed file.
    pub spec: ProfileFile,
    idle: Regex,
    busy: Option<Regex>,
    waiting_input: Option<Regex>,
    /// Compiled start-up rules, in file order.
    pub startup_rules: Vec<(Regex, StartupRule)>,
    /// Compiled exit-status regex.
    pub exit_status: Option<Regex>,
    /// Compiled trailing-line regex.
    pub strip_trailing: Option<Regex>,
    /// Compiled reply regex.
    pub reply: Option<Regex>,
    reply_exclude: Option<Regex>,
    /// Compiled permission rules `(when, action)`, parallel to `spec.permission`.
    permissions: Vec<(Regex, Regex)>,
    input: Option<Regex>,
    prompt_line: Option<Regex>,
    limits: Vec<Regex>,
    limit_menus: Vec<Option<Regex>>,
    /// The built-in extraction patterns with `[[extract]]` laid over them; `None` when
    /// the profile adds none (the shared built-in set is used).
    extractor: Option<Arc<Extractor>>,
}

fn compile(profile: &str, field: &str, pattern: &str) -> Result<Regex> {
    RegexBuilder::new(pattern)
        .multi_line(true)
        .build()
        .map_err(|e| Error::Profile {
            profile: profile.to_string(),
            message: format!("{field}: invalid regex: {e}"),
        })
}

/// Built-in profiles as `(name, TOML text)`, compiled into the binary from `config/profiles/`.
pub const BUILTIN: &[(&str, &str)] = &[
    ("shell", include_str!("../config/profiles/shell.toml")),
    (
        "fake-agent",
        include_str!("../config/profiles/fake-agent.toml"),
    ),
    (
        "claude-code",
        include_str!("../config/profiles/claude-code.toml"),
    ),
    ("codex", include_str!("../config/profiles/codex.toml")),
    ("gemini", include_str!("../config/profiles/gemini.toml")),
    ("aider", include_str!("../config/profiles/aider.toml")),
    ("ollama", include_str!("../config/profiles/ollama.toml")),
];

impl Profile {
    /// Parses and compiles a profile from TOML text.
    ///
    /// # Errors
    /// [`Error::Profile`] when the TOML is malformed, has unknown fields or a bad regex.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let spec: ProfileFile = toml::from_str(text).map_err(|e| Error::Profile {
            profile: name.to_string(),
            message: e.to_string(),
        })?;
        let idle = compile(name, "screen.idle", &spec.screen.idle)?;
        let busy = spec
            .screen
            .busy
            .as_deref()
            .map(|p| compile(name, "screen.busy", p))
            .transpose()?;
        let waiting_input = spec
            .screen
            .waiting_input
            .as_deref()
            .map(|p| compile(name, "screen.waiting_input", p))
            .transpose()?;
        let startup_rules = spec
            .startup
            .rules
            .iter()
            .map(|r| Ok((compile(name, "startup.rules.when", &r.when)?, r.clone())))
            .collect::<Result<Vec<_>>>()?;
        let exit_status = spec
            .result
            .exit_status
            .as_deref()
            .map(|p| compile(name, "result.exit_status", p))
            .transpose()?;
        let strip_trailing = spec
            .result
            .strip_trailing
            .as_deref()
            .map(|p| compile(name, "result.strip_trailing", p))
            .transpose()?;
        let reply = spec
            .result
            .reply
            .as_deref()
            .map(|p| compile(name, "result.reply", p))
            .transpose()?;
        let reply_exclude = spec
            .result
            .reply_exclude
            .as_deref()
            .map(|p| compile(name, "result.reply_exclude", p))
            .transpose()?;
        let permissions = spec
            .permission
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let when = compile(name, &format!("permission[{i}].when"), &p.when)?;
                let action = compile(name, &format!("permission[{i}].action"), &p.action)?;
                if !action.capture_names().any(|n| n == Some("action")) {
                    return Err(Error::Profile {
                        profile: name.to_string(),
                        message: format!("permission[{i}].action: needs a group named `action`"),
                    });
                }
                Ok((when, action))
            })
            .collect::<Result<Vec<_>>>()?;
        let with_text = |field: &str, pattern: &Option<String>| -> Result<Option<Regex>> {
            let Some(p) = pattern else { return Ok(None) };
            let re = compile(name, field, p)?;
            if !re.capture_names().any(|n| n == Some("text")) {
                return Err(Error::Profile {
                    profile: name.to_string(),
                    message: format!("{field}: needs a group named `text`"),
                });
            }
            Ok(Some(re))
        };
        let input = with_text("screen.input", &spec.screen.input)?;
        let prompt_line = with_text("screen.prompt_line", &spec.screen.prompt_line)?;
        let limits = spec
            .limit
            .iter()
            .enumerate()
            .map(|(i, l)| compile(name, &format!("limit[{i}].when"), &l.when))
            .collect::<Result<Vec<_>>>()?;
        let limit_menus = spec
            .limit
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if l.menu.is_some() != l.dismiss.is_some() {
                    return Err(Error::Profile {
                        profile: name.to_string(),
                        message: format!("limit[{i}]: give both `menu` and `dismiss`, or neither"),
                    });
                }
                l.menu
                    .as_deref()
                    .map(|m| compile(name, &format!("limit[{i}].menu"), m))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(si) = &spec.shell_integration {
            if si.shell != "bash" {
                return Err(Error::Profile {
                    profile: name.to_string(),
                    message: format!(
                        "shell_integration.shell: {:?} is not supported (only \"bash\")",
                        si.shell
                    ),
                });
            }
        }
        let extractor = if spec.extract.is_empty() {
            None
        } else {
            let merged = extract::merge(extract::builtin_specs(), &spec.extract);
            let mut names = std::collections::HashSet::new();
            for (i, p) in spec.extract.iter().enumerate() {
                let at = |e: extract::ExtractError| Error::Profile {
                    profile: name.to_string(),
                    message: format!("extract[{i}]: {e}"),
                };
                extract::check(p).map_err(at)?;
                if !names.insert(p.name.as_str()) {
                    return Err(at(extract::ExtractError::Duplicate(p.name.clone())));
                }
            }
            let x = Extractor::new(merged).map_err(|e| Error::Profile {
                profile: name.to_string(),
                message: format!("extract: {e}"),
            })?;
            Some(Arc::new(x))
        };
        if spec.terminal.cols < 20 || spec.terminal.rows < 5 {
            return Err(Error::Profile {
                profile: name.to_string(),
                message: "terminal must be at least 20 columns by 5 rows".into(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            spec,
            idle,
            busy,
            waiting_input,
            startup_rules,
            exit_status,
            strip_trailing,
            reply,
            reply_exclude,
            permissions,
            input,
            prompt_line,
            limits,
            limit_menus,
            extractor,
        })
    }

    /// The extraction patterns for this profile's sessions: the built-in set with the
    /// profile's `[[extract]]` entries laid over it.
    #[must_use]
    pub fn extractor(&self) -> Arc<Extractor> {
        self.extractor.clone().unwrap_or_else(extract::builtin)
    }

    /// Loads profile `name`: `<config_dir>/profiles/<name>.toml` if it exists, else the
    /// built-in one.
    ///
    /// # Errors
    /// [`Error::Profile`] for an unknown name or an invalid file; [`Error::Io`] when the
    /// file exists but cannot be read.
    pub fn load(config_dir: &Path, name: &str) -> Result<Self> {
        let path = config_dir.join("profiles").join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(name, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::builtin(name),
            Err(e) => Err(Error::io("reading profile", &path, e)),
        }
    }

    /// The built-in profile `name`.
    ///
    /// # Errors
    /// [`Error::Profile`] when there is no built-in profile of that name.
    pub fn builtin(name: &str) -> Result<Self> {
        let (_, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| Error::Profile {
                profile: name.to_string(),
                message: format!(
                    "no such profile: not in config/profiles/ and not built in (built in: {})",
                    BUILTIN
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        Self::parse(name, text)
    }

    /// When this profile has a built-in namesake with structured signals it lacks (a
    /// `config/profiles/<name>.toml` written by an older `architect init`): what it
    /// misses, for a warning.
    #[must_use]
    pub fn missing_signals(&self) -> Option<String> {
        let builtin = Self::builtin(&self.name).ok()?;
        let mut missing = Vec::new();
        if builtin.spec.shell_integration.is_some() && self.spec.shell_integration.is_none() {
            missing.push("[shell_integration] (tasks end by the screen, not by the shell's marks)");
        }
        if builtin.spec.hooks.is_some() && self.spec.hooks.is_none() {
            missing.push("[hooks] (the CLI's hooks are not installed; the screen alone decides)");
        }
        if builtin.spec.resume.is_some() && self.spec.resume.is_none() {
            missing.push("[resume]");
        }
        (!missing.is_empty()).then(|| missing.join(", "))
    }

    /// Reads the state off a rendered screen: `waiting_input`, then `busy`, then `idle`.
    /// `None` when no regex matches (a screen in transition).
    #[must_use]
    pub fn classify(&self, screen: &str) -> Option<ScreenState> {
        if self
            .waiting_input
            .as_ref()
            .is_some_and(|r| r.is_match(screen))
        {
            return Some(ScreenState::WaitingInput);
        }
        if self.busy.as_ref().is_some_and(|r| r.is_match(screen)) {
            return Some(ScreenState::Busy);
        }
        if self.idle.is_match(screen) {
            return Some(ScreenState::Idle);
        }
        None
    }

    /// The agent's reply on the final screen (group 1 of the last match of `result.reply`
    /// that `result.reply_exclude` does not match).
    #[must_use]
    pub fn reply(&self, screen: &str) -> Option<String> {
        let re = self.reply.as_ref()?;
        re.captures_iter(screen)
            .filter_map(|c| Some(c.get(1)?.as_str().trim_end().to_string()))
            .filter(|r| !self.reply_exclude.as_ref().is_some_and(|x| x.is_match(r)))
            .last()
    }

    /// The permission question on `screen`, if one of the profile's `[[permission]]` rules
    /// sees one (first rule whose `when` matches). Its action is read from the last match
    /// of the rule's `action` regex: rows trimmed, joined with `\n`.
    #[must_use]
    pub fn permission_request(&self, screen: &str) -> Option<PermissionRequest> {
        let (index, (_, action_re)) = self
            .permissions
            .iter()
            .enumerate()
            .find(|(_, (when, _))| when.is_match(screen))?;
        let spec = &self.spec.permission[index];
        let caps = action_re.captures_iter(screen).last();
        let action = caps
            .as_ref()
            .and_then(|c| c.name("action"))
            .map(|m| {
                m.as_str()
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim()
                    .to_string()
            })
            .filter(|a| !a.is_empty());
        let tool = caps
            .as_ref()
            .and_then(|c| c.name("tool"))
            .map(|m| m.as_str().trim().to_string());
        Some(PermissionRequest {
            index,
            name: spec.name.clone(),
            kind: spec.kind,
            action,
            tool,
        })
    }

    /// Splits a screen at its input box (`screen.input`, last match): the transcript
    /// above it, and the text typed in the box (trimmed). Without an input regex, or
    /// when the box is not on screen, the whole screen is transcript and the text `None`.
    #[must_use]
    pub fn split_input<'s>(&self, screen: &'s str) -> (&'s str, Option<String>) {
        let Some(re) = &self.input else {
            return (screen, None);
        };
        let Some(caps) = re.captures_iter(screen).last() else {
            return (screen, None);
        };
        let start = caps.get(0).map_or(screen.len(), |m| m.start());
        let text = caps
            .name("text")
            .map(|m| m.as_str().trim().to_string())
            .unwrap_or_default();
        (&screen[..start], Some(text))
    }

    /// Whether this profile can read prompts in the transcript (`screen.prompt_line`).
    #[must_use]
    pub fn anchors_replies(&self) -> bool {
        self.prompt_line.is_some()
    }

    /// Where `prompt` shows as a submitted prompt in `transcript`: the byte offset of the
    /// end of each such row, in order. A row shows the prompt when its `text` (first row
    /// of a wrapped prompt) is the start of the prompt, spaces and line breaks compared
    /// as single spaces, and is the whole prompt, its whole first line, or at least 12
    /// characters of it.
    #[must_use]
    pub fn prompt_rows(&self, transcript: &str, prompt: &str) -> Vec<usize> {
        let Some(re) = &self.prompt_line else {
            return Vec::new();
        };
        let want = squash(prompt);
        let first_line = squash(prompt.lines().find(|l| !l.trim().is_empty()).unwrap_or(""));
        re.captures_iter(transcript)
            .filter_map(|c| {
                let row = squash(c.name("text")?.as_str());
                let whole = c.get(0)?;
                let shows = !row.is_empty()
                    && want.starts_with(&row)
                    && (row == want || row == first_line || row.chars().count() >= 12);
                shows.then_some(whole.end())
            })
            .collect()
    }

    /// The reply in `text` (group 1 of the last match of `result.reply`).
    #[must_use]
    pub fn reply_in(&self, text: &str) -> Option<String> {
        self.reply(text)
    }

    /// How many times each `[[limit]]` rule matches `screen`, summed (new matches after
    /// a prompt mean a new limit message).
    #[must_use]
    pub fn limit_matches(&self, screen: &str) -> usize {
        self.limits
            .iter()
            .map(|re| re.find_iter(screen).count())
            .sum()
    }

    /// The text of the last `[[limit]]` match on `screen` and its rule's `backoff_s`.
    #[must_use]
    pub fn limit_message(&self, screen: &str) -> Option<(String, u64)> {
        self.limits
            .iter()
            .zip(&self.spec.limit)
            .filter_map(|(re, spec)| {
                let m = re.find_iter(screen).last()?;
                // The whole row(s) the match is on: the reset time may follow it.
                // The paragraph the match is in (to the next blank row): a message that
                // wraps names its reset time on a later row.
                let start = screen[..m.start()].rfind('\n').map_or(0, |i| i + 1);
                let end = screen[m.end()..]
                    .find("\n\n")
                    .map_or(screen.len(), |i| m.end() + i);
                let text = screen[start..end]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                Some((m.start(), text, spec.backoff_s))
            })
            .max_by_key(|(at, _, _)| *at)
            .map(|(_, text, backoff)| (text, backoff))
    }

    /// The keys that close a limit menu shown on `screen` (`[[limit]] menu`), if one is.
    #[must_use]
    pub fn limit_menu(&self, screen: &str) -> Option<&str> {
        self.limit_menus
            .iter()
            .zip(&self.spec.limit)
            .find(|(re, _)| re.as_ref().is_some_and(|r| r.is_match(screen)))
            .and_then(|(_, spec)| spec.dismiss.as_deref())
    }

    /// The exit status shown on the final screen, when the profile can read one.
    #[must_use]
    pub fn exit_status(&self, screen: &str) -> Option<i32> {
        let re = self.exit_status.as_ref()?;
        let caps = re.captures_iter(screen).last()?;
        caps.get(1)?.as_str().parse().ok()
    }
}

/// `s` with every run of whitespace (line breaks included) turned into one space,
/// trimmed.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses() {
        for (name, _) in BUILTIN {
            Profile::builtin(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn unknown_field_is_an_error() {
        let err = Profile::parse("x", "[screen]\nidle = 'a'\nidel = 'b'\n").unwrap_err();
        assert!(err.to_string().contains("idel"), "{err}");
    }

    #[test]
    fn bad_regex_names_the_field() {
        let err = Profile::parse("x", "[screen]\nidle = '('\n").unwrap_err();
        assert!(err.to_string().contains("screen.idle"), "{err}");
    }

    #[test]
    fn permission_action_is_read_from_the_last_match() {
        let p = Profile::parse(
            "x",
            r#"
[screen]
idle = '^> $'
waiting_input = 'Proceed\?'
[[permission]]
name = "bash"
kind = "command"
when = '^Proceed\?'
action = '^Run:\n(?P<action>(?:  [^\n]*\n?)+)'
yes = "y"
no = "n"
"#,
        )
        .unwrap();
        let screen = "Run:\n  echo old\nok\nRun:\n  git status\n  --short\nProceed?";
        let req = p.permission_request(screen).unwrap();
        assert_eq!(req.name, "bash");
        assert_eq!(req.kind, ActionKind::Command);
        assert_eq!(req.action.as_deref(), Some("git status\n--short"));
        assert!(p.permission_request("nothing here").is_none());
        let unreadable = p.permission_request("Proceed?").unwrap();
        assert_eq!(unreadable.action, None);
    }

    #[test]
    fn extract_entries_add_to_the_built_in_patterns_and_replace_one_of_the_same_name() {
        let p = Profile::parse(
            "x",
            r#"
[screen]
idle = '^> $'
[[extract]]
name = "deploy-id"
regex = '^Deployed (?P<id>d-[0-9]+)$'
category = "url"
severity = "info"
[[extract]]
name = "go-panic"
regex = '^PANIC (?P<message>.+)$'
category = "error"
severity = "warning"
"#,
        )
        .unwrap();
        let x = p.extractor();
        assert_eq!(x.specs().count(), crate::extract::builtin_specs().len() + 1);
        let got = x.extract("Deployed d-42\nPANIC disk full\npanic: ignored now\nValueError: kept");
        let summary: Vec<(&str, Option<&str>)> = got
            .iter()
            .map(|e| {
                let v = e.fields.get("id").or_else(|| e.fields.get("message"));
                (e.pattern.as_str(), v.map(String::as_str))
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("deploy-id", Some("d-42")),
                ("go-panic", Some("disk full")),
                ("exception", Some("kept")),
            ]
        );
        // A profile without entries shares the built-in set.
        let shell = Profile::builtin("shell").unwrap();
        assert!(Arc::ptr_eq(&shell.extractor(), &crate::extract::builtin()));
    }

    #[test]
    fn a_bad_extract_entry_names_the_profile_and_the_pattern() {
        let err = Profile::parse(
            "mine",
            "[screen]\nidle = 'a'\n[[extract]]\nname = 'broken'\nregex = '(x'\ncategory = 'error'\nseverity = 'error'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"mine\"") && err.contains("extract[0]") && err.contains("\"broken\""),
            "{err}"
        );
        let err = Profile::parse(
            "mine",
            "[screen]\nidle = 'a'\n[[extract]]\nname = 'twice'\nregex = 'x'\ncategory = 'error'\nseverity = 'error'\n[[extract]]\nname = 'twice'\nregex = 'y'\ncategory = 'error'\nseverity = 'error'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("extract[1]") && err.contains("defined twice"),
            "{err}"
        );
        let err = Profile::parse(
            "mine",
            "[screen]\nidle = 'a'\n[[extract]]\nname = 'x'\nregex = 'x'\ncategory = 'error'\nseverity = 'error'\ncolour = 'red'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"mine\"")
                && err.contains("unknown field `colour`")
                && err.contains("line 8"),
            "{err}"
        );
    }

    #[test]
    fn permission_action_regex_needs_an_action_group() {
        let err = Profile::parse(
            "x",
            "[screen]\nidle = 'a'\n[[permission]]\nname='b'\nkind='command'\nwhen='x'\naction='(y)'\nyes='1'\nno='2'\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("named `action`"), "{err}");
    }

    #[test]
    fn an_old_copy_of_a_builtin_profile_says_what_it_lacks() {
        let shell = BUILTIN.iter().find(|(n, _)| *n == "shell").unwrap().1;
        let old = shell
            .replace("[shell_integration]\nshell = \"bash\"\n", "")
            .replace("\"{shell_integration}\", ", "");
        let p = Profile::parse("shell", &old).unwrap();
        assert!(p.missing_signals().unwrap().contains("[shell_integration]"));
        assert_eq!(Profile::builtin("shell").unwrap().missing_signals(), None);
        assert_eq!(
            Profile::builtin("fake-agent").unwrap().missing_signals(),
            None
        );
    }

    #[test]
    fn shell_prompt_is_idle_only_when_empty() {
        let p = Profile::builtin("shell").unwrap();
        assert_eq!(p.classify("[0] architect$"), Some(ScreenState::Idle));
        assert_eq!(
            p.classify("[0] architect$ echo hi\nhi\n[0] architect$"),
            Some(ScreenState::Idle)
        );
        assert_ne!(
            p.classify("[0] architect$ sleep 5"),
            Some(ScreenState::Idle)
        );
        assert_eq!(
            p.exit_status("[0] architect$ false\n[1] architect$"),
            Some(1)
        );
    }
}
