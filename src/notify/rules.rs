//! `config/notify.toml`: the `[[notify]]` rules, read and validated ([`Rules::load`]).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::Trigger;
use crate::error::{Error, Result};

/// The example `config/notify.toml` that `architect init` writes: every rule commented
/// out.
pub const DEFAULT_NOTIFY: &str = include_str!("../../config/notify.toml");

/// Default `timeout_s`.
pub const DEFAULT_TIMEOUT_S: u64 = 10;
/// Default `burst`.
pub const DEFAULT_BURST: u32 = 5;
/// Default `min_interval_s`.
pub const DEFAULT_MIN_INTERVAL_S: u64 = 10;
/// Default `dedup_window_s`.
pub const DEFAULT_DEDUP_WINDOW_S: u64 = 600;
/// The longest `timeout_s`.
pub const MAX_TIMEOUT_S: u64 = 300;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    #[serde(default)]
    notify: Vec<RuleFile>,
}

/// One `[[notify]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    events: Vec<String>,
    #[serde(default)]
    sessions: Vec<String>,
    #[serde(default)]
    profiles: Vec<String>,
    command: Option<Vec<String>>,
    webhook: Option<String>,
    webhook_env: Option<String>,
    format: Option<Format>,
    #[serde(default = "d_timeout")]
    timeout_s: u64,
    #[serde(default = "d_burst")]
    burst: u32,
    #[serde(default = "d_interval")]
    min_interval_s: u64,
    #[serde(default = "d_window")]
    dedup_window_s: u64,
}

fn d_timeout() -> u64 {
    DEFAULT_TIMEOUT_S
}
fn d_burst() -> u32 {
    DEFAULT_BURST
}
fn d_interval() -> u64 {
    DEFAULT_MIN_INTERVAL_S
}
fn d_window() -> u64 {
    DEFAULT_DEDUP_WINDOW_S
}

/// What a webhook is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The notification JSON ([`super::Notification::body`]).
    #[default]
    Json,
    /// Slack's incoming-webhook body: `{"text": "<summary>"}`.
    Slack,
}

/// A webhook URL. It may carry a token (Slack's are all path), so it shows only its
/// scheme and host (`https://hooks.slack.com`) in `Debug` and `Display`; the whole URL
/// is [`WebhookUrl::secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    /// The whole URL, token and all: for the request only, never for a log.
    #[must_use]
    pub fn secret(&self) -> &url::Url {
        &self.0
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.0.scheme(),
            self.0.host_str().unwrap_or("")
        )?;
        if let Some(port) = self.0.port() {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run `argv[0]` with the rest as arguments (never through a shell), the
    /// notification JSON on its stdin.
    Command(Vec<String>),
    /// POST to `url`.
    Webhook {
        /// Where.
        url: WebhookUrl,
        /// The body's shape.
        format: Format,
    },
}

impl fmt::Display for Action {
    /// Without secrets: `command <program>` (not its arguments) or
    /// `webhook <scheme>://<host>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command(argv) => write!(f, "command {}", argv[0]),
            Self::Webhook { url, .. } => write!(f, "webhook {url}"),
        }
    }
}

/// One validated `[[notify]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `^[A-Za-z0-9_-]{1,64}$`, unique in the file; `notify_failed` events name it.
    pub name: String,
    /// The events it fires on.
    pub events: BTreeSet<Trigger>,
    /// Only events of these sessions (empty: any, and events without a session too).
    pub sessions: Vec<String>,
    /// Only events of sessions with these profiles (empty: any).
    pub profiles: Vec<String>,
    /// What it does.
    pub action: Action,
    /// How long the command or request may take (1–300 s).
    pub timeout: Duration,
    /// Sends allowed at once (the token bucket's size, ≥ 1).
    pub burst: u32,
    /// One more send allowed per this much time (zero: no rate limit).
    pub min_interval: Duration,
    /// The same event (same [`Trigger::dedup_key`]) within this long of its last send is
    /// not sent again (zero: no de-duplication).
    pub dedup_window: Duration,
}

/// The rules of `config/notify.toml`, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    /// Loads `<config_dir>/notify.toml`; no rules when there is no such file. Webhook
    /// URLs named by `webhook_env` are read from this process's environment.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Config`] naming the rule and
    /// what to fix when it is invalid (see [`Rules::parse`]).
    pub fn load(config_dir: &Path) -> Result<Self> {
        let path = config_dir.join("notify.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path, |k| std::env::var(k).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io("reading notification rules", &path, e)),
        }
    }

    /// Parses a file's text; `path` names it in errors, `env` gives an environment
    /// variable's value (for `webhook_env`).
    ///
    /// # Errors
    /// [`Error::Config`] when the TOML does not parse or has unknown keys, or a rule: has
    /// a bad or repeated `name`; names no event or an unknown one; has no action or more
    /// than one; has an empty `command`, a URL that is not `http(s)://`, a `webhook_env`
    /// that is unset or empty, a `format` on a command; a `timeout_s` outside 1–300; a
    /// `burst` of 0.
    pub fn parse(text: &str, path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let file: NotifyFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(file.notify.len());
        for (i, r) in file.notify.into_iter().enumerate() {
            let at = format!("[[notify]] #{} ({:?})", i + 1, r.name);
            let bad = |what: String| bad(format!("{at}: {what}"));
            if !crate::types::valid_id(&r.name) {
                return Err(bad("name must be 1–64 letters, digits, `_` or `-`".into()));
            }
            if !names.insert(r.name.clone()) {
                return Err(bad(
                    "another rule has this name; names must be unique".into()
                ));
            }
            let events = read_events(&r.events).map_err(&bad)?;
            let action = read_action(&r, &env).map_err(&bad)?;
            if !(1..=MAX_TIMEOUT_S).contains(&r.timeout_s) {
                return Err(bad(format!(
                    "timeout_s = {} is outside 1–{MAX_TIMEOUT_S}",
                    r.timeout_s
                )));
            }
            if r.burst == 0 {
                return Err(bad(
                    "burst = 0 would never send; use 1 or more (min_interval_s = 0 lifts the \
                     limit)"
                        .into(),
                ));
            }
            rules.push(Rule {
                name: r.name,
                events,
                sessions: r.sessions,
                profiles: r.profiles,
                action,
                timeout: Duration::from_secs(r.timeout_s),
                burst: r.burst,
                min_interval: Duration::from_secs(r.min_interval_s),
                dedup_window: Duration::from_secs(r.dedup_window_s),
            });
        }
        Ok(Self(rules))
    }

    /// No rule at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn read_events(names: &[String]) -> std::result::Result<BTreeSet<Trigger>, String> {
    let known = || {
        Trigger::ALL
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if names.is_empty() {
        return Err(format!("events is empty; name some of: {}", known()));
    }
    names
        .iter()
        .map(|n| {
            Trigger::from_name(n).ok_or_else(|| format!("unknown event {n:?}; known: {}", known()))
        })
        .collect()
}

fn read_action(
    r: &RuleFile,
    env: &impl Fn(&str) -> Option<String>,
) -> std::result::Result<Action, String> {
    let url = match (&r.command, &r.webhook, &r.webhook_env) {
        (Some(argv), None, None) => {
            if r.format.is_some() {
                return Err("format is for webhooks; a command gets the JSON".into());
            }
            if argv.first().is_none_or(String::is_empty) {
                return Err("command is empty; give [\"program\", \"arg\", …]".into());
            }
            return Ok(Action::Command(argv.clone()));
        }
        (None, Some(url), None) => url.clone(),
        (None, None, Some(var)) => env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            format!("webhook_env = {var:?}, but the daemon's environment has no {var}")
        })?,
        (None, None, None) => {
            return Err("no action: give command = [...], webhook = \"…\" or webhook_env".into())
        }
        _ => return Err("give one action: command, webhook or webhook_env".into()),
    };
    // The URL itself is never quoted back: it may hold a token.
    let parsed =
        url::Url::parse(url.trim()).map_err(|e| format!("the webhook URL does not parse ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("the webhook URL must be http:// or https:// with a host".into());
    }
    Ok(Action::Webhook {
        url: WebhookUrl(parsed),
        format: r.format.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Rules> {
        Rules::parse(text, Path::new("config/notify.toml"), |k| {
            (k == "HOOK").then(|| "https://hooks.example.com/T0/B0/tok3n".to_string())
        })
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_file_parses_with_no_rule_enabled() {
        assert!(parse(DEFAULT_NOTIFY).unwrap().is_empty());
    }

    #[test]
    fn every_commented_example_rule_parses_when_uncommented() {
        let text: String = DEFAULT_NOTIFY
            .lines()
            .skip_while(|l| !l.starts_with("# [[notify]]"))
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let text = text.replace("SLACK_WEBHOOK_URL", "HOOK");
        let rules = parse(&text).unwrap();
        assert_eq!(rules.0.len(), 3, "{text}");
        assert!(rules.0.iter().all(|r| !r.events.is_empty()));
    }

    #[test]
    fn a_rule_reads_with_its_defaults() {
        let rules = parse(
            "[[notify]]\nname = \"s\"\nevents = [\"task_failed\", \"node_dead\"]\n\
             webhook_env = \"HOOK\"\nformat = \"slack\"\n",
        )
        .unwrap();
        let r = &rules.0[0];
        assert_eq!(
            r.events,
            BTreeSet::from([Trigger::TaskFailed, Trigger::NodeDead])
        );
        assert_eq!(r.timeout, Duration::from_secs(DEFAULT_TIMEOUT_S));
        assert_eq!(r.burst, DEFAULT_BURST);
        assert_eq!(r.min_interval, Duration::from_secs(DEFAULT_MIN_INTERVAL_S));
        assert_eq!(r.dedup_window, Duration::from_secs(DEFAULT_DEDUP_WINDOW_S));
        let Action::Webhook { url, format } = &r.action else {
            panic!("{r:?}")
        };
        assert_eq!(*format, Format::Slack);
        assert_eq!(url.secret().path(), "/T0/B0/tok3n");
        // Shown without its path: the token stays out of logs.
        assert_eq!(r.action.to_string(), "webhook https://hooks.example.com");
        assert!(!format!("{r:?}").contains("tok3n"));
    }

    #[test]
    fn a_command_keeps_its_argv_and_shows_only_its_program() {
        let rules = parse(
            "[[notify]]\nname = \"c\"\nevents = [\"approval_needed\"]\n\
             command = [\"/bin/page\", \"--token\", \"x\"]\nburst = 1\nmin_interval_s = 0\n",
        )
        .unwrap();
        assert_eq!(
            rules.0[0].action,
            Action::Command(vec!["/bin/page".into(), "--token".into(), "x".into()])
        );
        assert_eq!(rules.0[0].action.to_string(), "command /bin/page");
        assert_eq!(rules.0[0].min_interval, Duration::ZERO);
    }

    #[test]
    fn mistakes_are_named_with_the_rule_and_the_fix() {
        let head = "[[notify]]\nname = \"r\"\n";
        let cases = [
            (
                format!("{head}events = [\"task_done\"]\ncommand = [\"x\"]\n"),
                "[[notify]] #1 (\"r\"): unknown event \"task_done\"; known: approval_needed",
            ),
            (
                format!("{head}events = []\ncommand = [\"x\"]\n"),
                "events is empty",
            ),
            (
                format!("{head}events = [\"task_failed\"]\n"),
                "no action: give command",
            ),
            (
                format!("{head}events = [\"task_failed\"]\ncommand = [\"x\"]\nwebhook = \"http://h\"\n"),
                "give one action",
            ),
            (
                format!("{head}events = [\"task_failed\"]\ncommand = []\n"),
                "command is empty",
            ),
            (
                format!("{head}events = [\"task_failed\"]\nwebhook = \"ftp://h/x\"\n"),
                "must be http:// or https://",
            ),
            (
                format!("{head}events = [\"task_failed\"]\nwebhook_env = \"NOPE\"\n"),
                "the daemon's environment has no NOPE",
            ),
            (
                format!("{head}events = [\"task_failed\"]\ncommand = [\"x\"]\nformat = \"slack\"\n"),
                "format is for webhooks",
            ),
            (
                format!("{head}events = [\"task_failed\"]\ncommand = [\"x\"]\ntimeout_s = 0\n"),
                "timeout_s = 0 is outside 1–300",
            ),
            (
                format!("{head}events = [\"task_failed\"]\ncommand = [\"x\"]\nburst = 0\n"),
                "burst = 0 would never send",
            ),
            (
                format!("{head}events = [\"task_failed\"]\ncommand = [\"x\"]\nsesions = []\n"),
                "unknown field `sesions`",
            ),
            (
                format!("{head}events = [\"task_failed\"]\ncommand = [\"x\"]\n{head}events = [\"task_failed\"]\ncommand = [\"x\"]\n"),
                "[[notify]] #2 (\"r\"): another rule has this name",
            ),
            (
                "[[notify]]\nname = \"a b\"\nevents = [\"task_failed\"]\ncommand = [\"x\"]\n".into(),
                "name must be 1–64 letters",
            ),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "{text}\n→ {e}\nwanted {want:?}");
            assert!(e.starts_with("config config/notify.toml: "), "{e}");
        }
    }

    #[test]
    fn a_bad_url_is_refused_without_quoting_it() {
        let e = err(
            "[[notify]]\nname = \"r\"\nevents = [\"task_failed\"]\nwebhook = \"https//hooks/s3cr3t\"\n",
        );
        assert!(e.contains("does not parse"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
    }
}
