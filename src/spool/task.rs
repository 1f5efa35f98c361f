//! The task formats: what a user drops into `inbox/` ([`TaskSpec`], validated against
//! `schemas/task.schema.json`) and the record the daemon keeps in the state directories
//! ([`TaskRecord`], `schemas/task-record.schema.json`).

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::types::{Complexity, Conflict, TaskResult};

/// The JSON Schema for task files, compiled into the binary.
pub const TASK_SCHEMA: &str = include_str!("../../schemas/task.schema.json");

/// Default `priority`.
pub const DEFAULT_PRIORITY: u8 = 5;
/// Default `timeout_s`.
pub const DEFAULT_TIMEOUT_S: u64 = 1800;
/// Default `max_retries`.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// A task as submitted (the inbox file), with the id filled in once accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// `^[A-Za-z0-9_-]{1,64}$`; a ULID when the submitter gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What the agent is asked to do.
    pub prompt: String,
    /// 0–10, higher first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Run on this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Run on any session with this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Task ids that must be done first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Seconds one attempt may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Retries after a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Run on this LLM provider (`config/providers.toml`), on a provider session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Run on a provider session, on the providers serving this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Route to a provider session by complexity (`[routing.complexity]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<Complexity>,
    /// Branch and path locks held while the task runs (taken all or nothing before it is
    /// handed to a session; the task waits in `waiting_lock` while they are held elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks: Option<LockSpec>,
    /// Free-form, carried through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// A task's `locks`: `{"branch": "feature/x", "paths": ["src/db.rs", "docs/"]}`.
///
/// Paths are relative to the repository root (or absolute inside it); a directory locks
/// everything inside it. See [`crate::locks`] for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LockSpec {
    /// The git branch the task works on; never a protected branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Files and directories the task works on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// Why a pending task is not running yet although it is next in line: its locks are held
/// elsewhere (`waiting_lock` in `status`, `show` and the record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockWait {
    /// When the wait began.
    pub since: DateTime<Utc>,
    /// The lock that was refused and who holds it.
    pub blocked_by: Conflict,
}

impl TaskSpec {
    /// Effective priority.
    #[must_use]
    pub fn priority(&self) -> u8 {
        self.priority.unwrap_or(DEFAULT_PRIORITY)
    }
    /// Effective timeout in seconds.
    #[must_use]
    pub fn timeout_s(&self) -> u64 {
        self.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S)
    }
    /// Effective retry budget.
    #[must_use]
    pub fn max_retries(&self) -> u32 {
        self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES)
    }
}

/// One schema violation: where in the document and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON Pointer into the task file (`""` is the whole document, `/priority` a field).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(TASK_SCHEMA).expect("schemas/task.schema.json is valid JSON");
        jsonschema::validator_for(&schema).expect("schemas/task.schema.json is a valid schema")
    })
}

const RECORD_SCHEMA: &str = include_str!("../../schemas/task-record.schema.json");

fn record_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let task: serde_json::Value =
            serde_json::from_str(TASK_SCHEMA).expect("schemas/task.schema.json is valid JSON");
        let record: serde_json::Value = serde_json::from_str(RECORD_SCHEMA)
            .expect("schemas/task-record.schema.json is valid JSON");
        jsonschema::options()
            .with_resource(
                "https://architect.dev/schemas/task.schema.json",
                jsonschema::Resource::from_contents(task).expect("the task schema is a resource"),
            )
            .build(&record)
            .expect("schemas/task-record.schema.json is a valid schema")
    })
}

/// Parses and validates a task record's bytes (a file in a state directory) against
/// `schemas/task-record.schema.json`, which includes the task schema: what the daemon
/// reads back at start-up is checked as strictly as what it took in.
///
/// # Errors
/// The violations, as [`parse_task`] gives them (never quoting a value).
pub fn parse_record(bytes: &[u8]) -> Result<TaskRecord, Vec<Violation>> {
    record_of_value(parse_json(bytes)?)
}

/// Parses and validates a task file's bytes.
///
/// # Errors
/// The list of violations: invalid UTF-8 or JSON (path `""`, with line and column), or
/// each schema violation with its JSON Pointer.
pub fn parse_task(bytes: &[u8]) -> Result<TaskSpec, Vec<Violation>> {
    task_of_value(parse_json(bytes)?)
}

/// A file's bytes as one JSON value: a UTF-8 byte order mark (some Windows editors write
/// one) is skipped, as it is not part of the JSON.
///
/// # Errors
/// One violation at path `""`: the file is empty, not UTF-8 text, or not JSON (with line
/// and column).
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, Vec<Violation>> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(whole(
            "empty file: expected a JSON object with a \"prompt\"".into(),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| whole(format!("not UTF-8 text (binary file?): {e}")))?;
    serde_json::from_str(text).map_err(|e| whole(format!("invalid JSON: {e}")))
}

/// Whether a JSON value read from a state directory is a task record (it has `format`
/// and `task`) rather than a task as submitted.
#[must_use]
pub fn is_record(value: &serde_json::Value) -> bool {
    value.get("format").is_some() && value.get("task").is_some()
}

/// A task record from its JSON value, validated as [`parse_record`] does.
///
/// # Errors
/// The violations.
pub fn record_of_value(value: serde_json::Value) -> Result<TaskRecord, Vec<Violation>> {
    validated(value, record_validator())
}

/// A task from its JSON value, validated as [`parse_task`] does.
///
/// # Errors
/// The violations.
pub fn task_of_value(value: serde_json::Value) -> Result<TaskSpec, Vec<Violation>> {
    validated(value, validator())
}

/// `value` checked against `schema`, then turned into `T` (the value's strings are moved,
/// not copied: a 4 MiB prompt is held once).
fn validated<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    schema: &jsonschema::Validator,
) -> Result<T, Vec<Violation>> {
    let errors: Vec<Violation> = schema
        .iter_errors(&value)
        .flat_map(|e| schema_violations(&e))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    serde_json::from_value(value).map_err(|e| whole(struct_mismatch(&e)))
}

/// A violation of the whole file (path `""`).
fn whole(message: String) -> Vec<Violation> {
    vec![Violation {
        path: String::new(),
        message,
    }]
}

/// Longest field name a rejection report repeats; a longer one is cut.
const MAX_FIELD_NAME: usize = 64;

/// A field name a producer chose, as a rejection report may show it: redacted, control
/// characters replaced, cut to [`MAX_FIELD_NAME`] characters.
fn field_name(name: &str) -> String {
    let clean: String = crate::redact::redact(name)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.chars().count() > MAX_FIELD_NAME {
        let cut: String = clean.chars().take(MAX_FIELD_NAME).collect();
        format!("{cut}…")
    } else {
        clean
    }
}

/// One schema error as violations that name the field (the JSON Pointer) and the rule
/// (the schema keyword, in parentheses), never the value: a rejected file may hold a
/// secret, and reports and events are read by more people than its producer. (The
/// `jsonschema` crate's own messages quote the value.)
fn schema_violations(e: &jsonschema::ValidationError<'_>) -> Vec<Violation> {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    let at = e.instance_path.to_string();
    let schema_path = e.schema_path.to_string();
    let keyword = schema_path.rsplit('/').next().unwrap_or_default();
    let one = |path: String, rule: String| {
        vec![Violation {
            path,
            message: format!("{rule} ({keyword})"),
        }]
    };
    let child = |name: &str| {
        format!(
            "{at}/{}",
            field_name(name).replace('~', "~0").replace('/', "~1")
        )
    };
    match &e.kind {
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
            unexpected
                .iter()
                .map(|name| Violation {
                    path: child(name),
                    message: format!("unknown field: not in the task format ({keyword})"),
                })
                .collect()
        }
        K::Required { property } => one(
            child(property.as_str().unwrap_or_default()),
            "is required".into(),
        ),
        K::Type {
            kind: TypeKind::Single(t),
        } => one(at, format!("must be of type {t}")),
        K::Type {
            kind: TypeKind::Multiple(ts),
        } => {
            let ts: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
            one(at, format!("must be of type {}", ts.join(" or ")))
        }
        K::Minimum { limit } => one(at, format!("must be at least {limit}")),
        K::Maximum { limit } => one(at, format!("must be at most {limit}")),
        K::ExclusiveMinimum { limit } => one(at, format!("must be more than {limit}")),
        K::ExclusiveMaximum { limit } => one(at, format!("must be less than {limit}")),
        K::MinLength { limit } => one(at, format!("must be at least {limit} characters long")),
        K::MaxLength { limit } => one(at, format!("must be at most {limit} characters long")),
        K::MinItems { limit } => one(at, format!("must have at least {limit} items")),
        K::MaxItems { limit } => one(at, format!("must have at most {limit} items")),
        K::UniqueItems => one(at, "must not repeat an item".into()),
        K::Pattern { pattern } => one(at, format!("does not match the pattern {pattern}")),
        K::Enum { options } => one(at, format!("must be one of {options}")),
        K::Constant { expected_value } => one(at, format!("must be {expected_value}")),
        // The schema's only `not` is "session and role together".
        K::Not { .. } => one(at, "give either \"session\" or \"role\", not both".into()),
        // Anything else: the crate's message with the value masked.
        _ => one(at, e.masked_with("the value").to_string()),
    }
}

/// Why a document the schema accepted still does not fit [`TaskSpec`] (the two disagree:
/// a bug), without serde's quote of the value.
fn struct_mismatch(e: &serde_json::Error) -> String {
    let what = e.to_string();
    let kind = what
        .split([':', '`', '"'])
        .next()
        .unwrap_or_default()
        .trim();
    format!("does not fit the task format ({kind}); the schema and the parser disagree, please report it")
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The agent finished the prompt.
    Completed,
    /// The agent finished but reported failure (e.g. a non-zero exit status).
    Failed,
    /// The attempt outlived `timeout_s` and was interrupted.
    TimedOut,
    /// The session's process died during the attempt.
    SessionDied,
    /// The daemon stopped (or crashed) during the attempt.
    Interrupted,
    /// The task was cancelled during the attempt.
    Cancelled,
    /// The prompt was proven not taken (still in the input box after every Enter).
    NotTaken,
    /// Neither proof that the prompt was taken nor that it was not: not retried, so it
    /// cannot run twice (`architect retry` runs it again).
    DeliveryUncertain,
    /// The agent hit a usage limit; the task went back to the queue (not counted).
    Limited,
}

/// One run of a task on a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: u32,
    /// Session that ran it.
    pub session: String,
    /// Node the session ran on.
    pub node: String,
    /// When the prompt was assigned.
    pub started_at: DateTime<Utc>,
    /// When the attempt ended.
    pub finished_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A task's state: the spool directory its record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Queued (possibly waiting for dependencies or a retry backoff).
    Pending,
    /// Running on a session.
    Active,
    /// Finished successfully.
    Done,
    /// Finished unsuccessfully, for good.
    Failed,
    /// Cancelled by a person.
    Cancelled,
}

impl TaskState {
    /// All states, in lifecycle order.
    pub const ALL: [TaskState; 5] = [
        TaskState::Pending,
        TaskState::Active,
        TaskState::Done,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The spool directory name.
    #[must_use]
    pub fn dir(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a directory name.
    #[must_use]
    pub fn from_dir(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.dir() == s)
    }

    /// Done, failed or cancelled.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// The record kept in `pending/`, `active/`, `done/`, `failed/` and `cancelled/` as
/// `<id>.json`. The final record carries the task, its attempts, the session that ran it,
/// timings, and the result or the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRecord {
    /// Record format version (1).
    pub format: u32,
    /// The task id.
    pub id: String,
    /// The state the record was written for (equals its directory once published).
    pub state: TaskState,
    /// The task as submitted, id filled in.
    pub task: TaskSpec,
    /// Node that accepted the task (the only writer of this record).
    pub node: String,
    /// The inbox file name it arrived as.
    pub source: String,
    /// When the daemon accepted it.
    pub received_at: DateTime<Utc>,
    /// Finished attempts, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Attempts made before the last manual `architect retry` (they no longer count
    /// against `max_retries`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt_base: u32,
    /// Retries happen no earlier than this (exponential backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The session of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the task reached its final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The result (done, and failed with output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set while the task waits for its locks (state `pending`, shown as `waiting_lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_lock: Option<LockWait>,
    /// Set, durably, before a prompt goes to a session whose profile submits at most once
    /// (`submit.at_most_once`), and cleared when the attempt ends: a daemon that starts
    /// and finds it in `active/` knows the prompt may have run, and fails the task rather
    /// than send it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_in_flight: Option<InFlight>,
}

/// An attempt under way on a session that submits at most once (see
/// [`TaskRecord::attempt_in_flight`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlight {
    /// The session it was sent to.
    pub session: String,
    /// The attempt (1 = first).
    pub attempt: u32,
    /// When it was claimed.
    pub since: DateTime<Utc>,
}

impl TaskRecord {
    /// A fresh pending record for an accepted task.
    #[must_use]
    pub fn new(
        id: String,
        spec: TaskSpec,
        node: String,
        source: String,
        received_at: DateTime<Utc>,
    ) -> Self {
        Self {
            format: 1,
            id,
            state: TaskState::Pending,
            task: spec,
            node,
            source,
            received_at,
            attempts: Vec::new(),
            attempt_base: 0,
            not_before: None,
            session: None,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            waiting_lock: None,
            attempt_in_flight: None,
        }
    }

    /// The state to show a person, given the directory the record is in (`dir`, which is
    /// the task's state: the record's own `state` field lags behind a claim, so a running
    /// task's record in `active/` may still say pending): `dir`'s name, or `waiting_lock`
    /// for a pending task waiting for its locks.
    #[must_use]
    pub fn display_state(&self, dir: TaskState) -> &'static str {
        if dir == TaskState::Pending && self.waiting_lock.is_some() {
            "waiting_lock"
        } else {
            dir.dir()
        }
    }

    /// Attempts that count against `max_retries`: those since the last manual retry.
    #[must_use]
    pub fn attempts_used(&self) -> u32 {
        // An attempt stopped by the agent's usage limit never ran, and one cut short by
        // the daemon's own crash or stop did not fail: neither counts. (A task that keeps
        // taking the daemon down is quarantined by a separate bound: the scheduler's
        // `CRASH_QUARANTINE`.)
        let not_counted = self
            .attempts
            .iter()
            .filter(|a| {
                matches!(
                    a.outcome,
                    AttemptOutcome::Limited | AttemptOutcome::Interrupted
                )
            })
            .count();
        u32::try_from(self.attempts.len() - not_counted)
            .unwrap_or(u32::MAX)
            .saturating_sub(self.attempt_base)
    }

    /// Whether another attempt is allowed: attempts so far ≤ `max_retries`.
    #[must_use]
    pub fn may_retry(&self) -> bool {
        self.attempts_used() <= self.task.max_retries()
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_task_parses_with_defaults() {
        let t = parse_task(br#"{"prompt":"echo hi"}"#).unwrap();
        assert_eq!(t.priority(), 5);
        assert_eq!(t.timeout_s(), 1800);
        assert_eq!(t.max_retries(), 3);
    }

    #[test]
    fn violations_carry_json_paths() {
        let e = parse_task(br#"{"prompt":"x","priority":11}"#).unwrap_err();
        assert_eq!(e[0].path, "/priority");
        assert_eq!(e[0].message, "must be at most 10 (maximum)");
        let e = parse_task(br#"{"prompt":"x","colour":"red"}"#).unwrap_err();
        assert_eq!(e[0].path, "/colour");
        assert!(e[0].message.contains("unknown field"), "{e:?}");
        let e = parse_task(br#"{"priority":1}"#).unwrap_err();
        assert_eq!(e[0].path, "/prompt");
        assert_eq!(e[0].message, "is required (required)");
        let e = parse_task(br#"{"prompt":"x","id":"../etc"}"#).unwrap_err();
        assert_eq!(e[0].path, "/id");
        let e = parse_task(br#"{"prompt":"x","session":"a","role":"b"}"#).unwrap_err();
        assert!(e[0].message.contains("not both"), "{e:?}");
        let e = parse_task(b"").unwrap_err();
        assert!(e[0].message.contains("empty"));
        let e = parse_task(b"\xff\xfe\x00").unwrap_err();
        assert!(e[0].message.contains("UTF-8"));
        let e = parse_task(b"{\"prompt\": ").unwrap_err();
        assert!(e[0].message.contains("invalid JSON"));
    }

    /// Issue 9: a rejection names the field and the rule, never the value, which may be
    /// a secret pasted into the wrong field.
    #[test]
    fn rejections_name_the_field_and_the_rule_never_the_value() {
        const S: &str = "sk-test-SECRET123";
        for (doc, path, rule) in [
            (
                format!(r#"{{"prompt":"x","priority":"{S}"}}"#),
                "/priority",
                "(type)",
            ),
            (
                format!(r#"{{"prompt":"x","colour":"{S}"}}"#),
                "/colour",
                "(additionalProperties)",
            ),
            (
                format!(r#"{{"prompt":"x","id":"{S}!"}}"#),
                "/id",
                "(pattern)",
            ),
            (
                format!(r#"{{"prompt":"x","complexity":"{S}"}}"#),
                "/complexity",
                "(enum)",
            ),
            (
                format!(r#"{{"prompt":"x","depends_on":["a","{S}!"]}}"#),
                "/depends_on/1",
                "(pattern)",
            ),
            (
                format!(r#"{{"prompt":"x","depends_on":["{S}","{S}"]}}"#),
                "/depends_on",
                "(uniqueItems)",
            ),
            (
                format!(r#"{{"prompt":"x","model":"{S}{}"}}"#, "x".repeat(200)),
                "/model",
                "(maxLength)",
            ),
            (
                format!(r#"{{"prompt":"x","locks":{{"branch":"b","key":"{S}"}}}}"#),
                "/locks/key",
                "(additionalProperties)",
            ),
            (
                format!(r#"{{"prompt":"x","locks":{{"paths":"{S}"}}}}"#),
                "/locks/paths",
                "(type)",
            ),
            (
                format!(r#"{{"prompt":"x","metadata":1,"{S}":1}}"#),
                "/[REDACTED]",
                "(additionalProperties)",
            ),
            (
                format!(r#"{{"prompt":{{"OPENAI_API_KEY":"{S}"}}}}"#),
                "/prompt",
                "(type)",
            ),
            (format!(r#"["{S}"]"#), "", "(type)"),
        ] {
            let errors = parse_task(doc.as_bytes()).unwrap_err();
            let shown = format!("{errors:?}");
            assert!(!shown.contains("SECRET123"), "{doc} → {shown}");
            assert!(
                errors
                    .iter()
                    .any(|e| e.path == path && e.message.ends_with(rule)),
                "{doc}: expected {rule} at {path:?}, got {shown}"
            );
        }
        // A long unknown field name is cut.
        let long = "f".repeat(5000);
        let e = parse_task(format!(r#"{{"prompt":"x","{long}":1}}"#).as_bytes()).unwrap_err();
        assert!(e[0].path.len() < 100, "{e:?}");
    }

    #[test]
    fn a_struct_mismatch_does_not_quote_serde_s_value() {
        let e = serde_json::from_str::<u8>(r#""sk-test-SECRET123""#).unwrap_err();
        let m = struct_mismatch(&e);
        assert!(!m.contains("SECRET123"), "{m}");
        assert!(m.contains("(invalid type)"), "{m}");
    }
}
