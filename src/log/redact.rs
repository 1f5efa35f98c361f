//! Secret redaction for everything written to the event log.
//!
//! Patterns cover the credential formats agents handle: Anthropic/OpenAI `sk-…` keys,
//! GitHub tokens (`ghp_`, `gho_`, `ghs_`, `ghu_`, `github_pat_`), AWS access key ids,
//! Google API keys (`AIza…`), Slack tokens (`xox?-`), bearer tokens, private-key blocks,
//! and `key=value` / `key: value` pairs whose key names a secret. Each match becomes
//! `[REDACTED]` (the key name of a pair is kept).

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

/// The replacement text.
pub const REDACTED: &str = "[REDACTED]";

fn patterns() -> &'static [Regex; 2] {
    static P: OnceLock<[Regex; 2]> = OnceLock::new();
    P.get_or_init(|| {
        [
            Regex::new(concat!(
                r"sk-[A-Za-z0-9_\-]{16,}",
                r"|gh[pousr]_[A-Za-z0-9]{20,}",
                r"|github_pat_[A-Za-z0-9_]{20,}",
                r"|\bA(?:KIA|SIA)[0-9A-Z]{16}\b",
                r"|AIza[0-9A-Za-z_\-]{30,}",
                r"|xox[abposr]-[A-Za-z0-9\-]{10,}",
                r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{12,}=*",
                r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\z)",
            ))
            .expect("static regex"),
            Regex::new(
                r#"(?i)\b([A-Za-z0-9_]*(?:api[_-]?key|token|secret|passw(?:or)?d|credential)[A-Za-z0-9_]*)(["']?\s*[=:]\s*["']?)([^\s"',;]{4,})"#,
            )
            .expect("static regex"),
        ]
    })
}

/// Redacts secrets in one string.
#[must_use]
pub fn redact(s: &str) -> String {
    let [tokens, pairs] = patterns();
    let once = tokens.replace_all(s, REDACTED);
    pairs
        .replace_all(&once, |c: &regex::Captures<'_>| {
            if &c[3] == REDACTED {
                format!("{}{}{}", &c[1], &c[2], &c[3])
            } else {
                format!("{}{}{REDACTED}", &c[1], &c[2])
            }
        })
        .into_owned()
}

/// Redacts every string inside a JSON value (keys are left alone).
#[must_use]
pub fn redact_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(redact_value).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, redact_value(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_token_shapes_are_redacted() {
        for secret in [
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",
            "sk-proj-ABCDEFGHIJKLMNOPQRSTUV",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "github_pat_11ABCDEFG0123456789_abcdefghijkl",
            "AKIAIOSFODNN7EXAMPLE",
            "AIzaSyA-abcdefghijklmnopqrstuvwxyz12345",
            "xoxb-123456789012-abcdefghij",
        ] {
            let out = redact(&format!("key is {secret} ok"));
            assert!(!out.contains(secret), "{out}");
            assert!(out.contains(REDACTED), "{out}");
        }
    }

    #[test]
    fn secret_pairs_keep_the_name() {
        assert_eq!(
            redact("ANTHROPIC_API_KEY=abc123xyz"),
            "ANTHROPIC_API_KEY=[REDACTED]"
        );
        assert_eq!(
            redact(r#""password": "hunter22""#),
            r#""password": "[REDACTED]""#
        );
        assert_eq!(
            redact("Authorization: Bearer abcdefghijklmnop.qrs"),
            "Authorization: [REDACTED]"
        );
        assert_eq!(redact("echo hello world"), "echo hello world");
    }

    #[test]
    fn nested_values_are_redacted() {
        let v = redact_value(serde_json::json!({"a": ["token=supersecret1"], "n": 1}));
        assert_eq!(v, serde_json::json!({"a": ["token=[REDACTED]"], "n": 1}));
    }
}
