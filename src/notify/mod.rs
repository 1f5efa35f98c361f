//! Notifications: `config/notify.toml`'s `[[notify]]` rules send chosen events to a
//! person, by a command or a webhook (README, "Notifications").
//!
//! Driven off the event log: the daemon makes [`Notifications`] its log's observer, so
//! every event it logs, from any module, passes one hook. The pieces:
//! - [`Trigger`]: which logged events can notify, their dedup keys, their one-line
//!   summaries ([`summary`]);
//! - [`Rules`]: the file, validated (errors name the rule and the fix);
//! - [`Notifier`]: the decision in pure code — an event and the time in, the
//!   notifications out — with each rule's de-duplication and rate limit;
//! - [`Notifications`]: the thin async shell — a bounded queue to a worker that runs
//!   commands and POSTs webhooks with timeouts, and logs `notify_failed` when one fails.

mod decide;
mod rules;
mod shell;
mod trigger;

pub use decide::{Notification, Notifier};
pub use rules::{
    Action, Format, Rule, Rules, WebhookUrl, DEFAULT_BURST, DEFAULT_DEDUP_WINDOW_S,
    DEFAULT_MIN_INTERVAL_S, DEFAULT_NOTIFY, DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S,
};
pub use shell::{Notifications, CONCURRENT_SENDS, QUEUE_CAPACITY, STDERR_TAIL_BYTES};
pub use trigger::{redacted, summary, Trigger, SUMMARY_MAX_CHARS};
