//! Secret redaction for everything architect writes that others read: every string of
//! the event log, task results, rejection reports, LLM error messages, the tracing log.
//!
//! The rules are data: `config/redact.toml`, built into the
//! binary. Each rule is a regex and, optionally, the capture group that is the secret
//! (the rest of the match — a key name, a header name, a URL's user — is kept): API keys
//! and tokens with a known prefix (OpenAI/Anthropic `sk-…`, Stripe, GitHub, GitLab,
//! Hugging Face, npm, PyPI, AWS, Google, Slack, …), JWTs, private-key blocks, URL
//! passwords, `Authorization` and `Cookie` header values, bearer tokens, command-line
//! flags such as `--password x`, and `key = value` / `key: value` pairs whose key names a
//! secret. Each secret becomes `[REDACTED]`.
//!
//! Speed: one pass of a [`RegexSet`] over the text finds which rules match at all (on
//! most event strings, none); only those run.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex, RegexSet};
use serde::Deserialize;
use serde_json::Value;

/// The replacement text.
pub const REDACTED: &str = "[REDACTED]";

/// The rules that ship, `config/redact.toml`.
pub const DEFAULT_RULES: &str = include_str!("../config/redact.toml");

/// One `[[rule]]` of the rules file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name, for tests and messages.
    pub id: String,
    /// What it catches.
    pub description: String,
    /// The pattern (`regex` crate syntax).
    pub regex: String,
    /// The capture group that is the secret (default: the whole match).
    #[serde(default)]
    pub secret_group: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rule: Vec<Rule>,
}

/// A compiled rule set.
#[derive(Debug)]
pub struct Redactor {
    set: RegexSet,
    rules: Vec<(Regex, Option<usize>)>,
    ids: Vec<String>,
}

impl Redactor {
    /// Compiles a rules file's text.
    ///
    /// # Errors
    /// The TOML error, or the id of a rule whose regex does not compile or whose
    /// `secret_group` is not one of its groups.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Vec::with_capacity(file.rule.len());
        for r in &file.rule {
            let re = Regex::new(&r.regex).map_err(|e| format!("rule {}: {e}", r.id))?;
            if let Some(g) = r.secret_group {
                if g == 0 || g >= re.captures_len() {
                    return Err(format!("rule {}: no capture group {g}", r.id));
                }
            }
            rules.push((re, r.secret_group));
        }
        let set = RegexSet::new(file.rule.iter().map(|r| &r.regex)).map_err(|e| e.to_string())?;
        Ok(Self {
            set,
            rules,
            ids: file.rule.into_iter().map(|r| r.id).collect(),
        })
    }

    /// The ids of the rules that match `s` (before any is applied).
    #[must_use]
    pub fn matching(&self, s: &str) -> Vec<&str> {
        self.set
            .matches(s)
            .iter()
            .map(|i| self.ids[i].as_str())
            .collect()
    }

    /// Redacts the secrets in `s`.
    #[must_use]
    pub fn redact(&self, s: &str) -> String {
        let matched = self.set.matches(s);
        if !matched.matched_any() {
            return s.to_string();
        }
        let mut out = Cow::Borrowed(s);
        for i in matched.iter() {
            let (re, group) = &self.rules[i];
            let next = match re.replace_all(&out, |c: &Captures<'_>| replacement(c, *group)) {
                Cow::Borrowed(_) => None,
                Cow::Owned(o) => Some(o),
            };
            if let Some(o) = next {
                out = Cow::Owned(o);
            }
        }
        out.into_owned()
    }
}

/// The text a match becomes: `[REDACTED]` in place of the secret group (or the whole
/// match); a secret already redacted by an earlier rule is left as it is.
fn replacement(c: &Captures<'_>, group: Option<usize>) -> String {
    let whole = c.get(0).expect("group 0 is the match");
    let Some(secret) = group.and_then(|g| c.get(g)) else {
        return REDACTED.to_string();
    };
    if secret.as_str().starts_with(REDACTED) {
        return whole.as_str().to_string();
    }
    let text = whole.as_str();
    let (a, b) = (secret.start() - whole.start(), secret.end() - whole.start());
    format!("{}{REDACTED}{}", &text[..a], &text[b..])
}

fn rules() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(|| Redactor::parse(DEFAULT_RULES).expect("config/redact.toml compiles"))
}

/// Redacts secrets in one string.
#[must_use]
pub fn redact(s: &str) -> String {
    rules().redact(s)
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

    /// `(rule id, text, the secret in it)`: every shape the rules know, as it appears in
    /// what agents print.
    const SECRETS: &[(&str, &str, &str)] = &[
        ("private-key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEA7"),
        ("private-key", "key: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA (cut)", "b3BlbnNzaC1rZXktdjEAAAAA"),
        ("openai-anthropic-key", "key is sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345 ok", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345"),
        ("openai-anthropic-key", "key is sk-proj-ABCDEFGHIJKLMNOPQRSTUV ok", "sk-proj-ABCDEFGHIJKLMNOPQRSTUV"),
        ("openai-anthropic-key", "OPENAI_API_KEY is sk-test-SECRET123.", "sk-test-SECRET123"),
        ("stripe-key", "stripe.api_key = \"sk_live_51HxYzAbCdEfGhIjKlMn\"", "sk_live_51HxYzAbCdEfGhIjKlMn"),
        ("stripe-key", "restricted rk_test_4eC39HqLyjWDarjtT1zdp7dc", "rk_test_4eC39HqLyjWDarjtT1zdp7dc"),
        ("github-token", "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 here", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("github-token", "github_pat_11ABCDEFG0123456789_abcdefghijkl", "github_pat_11ABCDEFG0123456789_abcdefghijkl"),
        ("gitlab-token", "git push https://oauth2@gitlab.com with glpat-xY9zAbCdEfGh1234IjKl", "glpat-xY9zAbCdEfGh1234IjKl"),
        ("huggingface-token", "HF token hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH in env", "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"),
        ("npm-token", "//registry.npmjs.org/:_authToken npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
        ("pypi-token", "password = pypi-AgEIcHlwaS5vcmcCJGFiY2RlZmdoLWlqa2wtbW5vcC1xcnN0LXV2d3h5ejEyMzQ1Njc4OTA", "pypi-AgEIcHlwaS5vcmcCJGFiY2RlZmdoLWlqa2wtbW5vcC1xcnN0LXV2d3h5ejEyMzQ1Njc4OTA"),
        ("aws-access-key-id", "aws_access_key_id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("google-api-key", "AIzaSyA-abcdefghijklmnopqrstuvwxyz12345", "AIzaSyA-abcdefghijklmnopqrstuvwxyz12345"),
        ("slack-token", "xoxb-123456789012-abcdefghij", "xoxb-123456789012-abcdefghij"),
        ("slack-token", "POST https://hooks.slack.com/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX", "T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX"),
        ("sendgrid-key", "SG.aBcDeFgHiJkLmNoPqRsTuV.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcDeFg", "SG.aBcDeFgHiJkLmNoPqRsTuV.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcDeFg"),
        ("digitalocean-token", "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ("shopify-token", "shpat_0123456789abcdef0123456789abcdef", "shpat_0123456789abcdef0123456789abcdef"),
        ("databricks-token", "dapi0123456789abcdef0123456789abcdef", "dapi0123456789abcdef0123456789abcdef"),
        ("linear-key", "lin_api_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcD", "lin_api_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789aBcD"),
        ("grafana-token", "glsa_aBcDeFgHiJkLmNoPqRsTuVwXyZ012345_0a1b2c3d", "glsa_aBcDeFgHiJkLmNoPqRsTuVwXyZ012345_0a1b2c3d"),
        ("vault-doppler-token", "VAULT hvs.CAESIJaBcDeFgHiJkLmNoPqRsTuVwXyZ012", "hvs.CAESIJaBcDeFgHiJkLmNoPqRsTuVwXyZ012"),
        ("age-secret-key", "AGE-SECRET-KEY-1QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7LQPZRY9X8GF2TVDW0S3JN54KHCE", "AGE-SECRET-KEY-1QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"),
        ("jwt", "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end", "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
        ("url-credentials", "git clone https://user:hunter2pw@github.com/org/repo.git", "hunter2pw"),
        ("url-credentials", "DATABASE_URL=postgres://app:s3cr3t-Pw@db.internal:5432/app", "s3cr3t-Pw"),
        ("url-credentials", "redis://:r3dis-pass@cache:6379/0", "r3dis-pass"),
        ("authorization-header", "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA==' https://x", "dXNlcjpwYXNzd29yZA=="),
        ("authorization-header", "{\"Authorization\": \"Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b\"}", "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"),
        ("cookie-header", "Cookie: sessionid=38afes7a8; csrftoken=u32t4o3tb3gg43", "38afes7a8"),
        ("bearer-token", "sent bearer abcdefghijklmnop.qrs to the API", "abcdefghijklmnop.qrs"),
        ("secret-flag", "mysql --user root --password Hunter2! db", "Hunter2!"),
        ("secret-flag", "vault login --token=s.AbCdEf123456", "s.AbCdEf123456"),
        ("secret-flag", "tool --api-key 'k3y with spaces'", "k3y with spaces"),
        ("secret-assignment", "DB_PASS=correcthorse", "correcthorse"),
        ("secret-assignment", "export ANTHROPIC_API_KEY=abc123xyz", "abc123xyz"),
        ("secret-assignment", "{\"password\": \"hunter22\"}", "hunter22"),
        ("secret-assignment", "GITHUB_TOKEN: gh0-not-a-real-shape", "gh0-not-a-real-shape"),
        ("secret-assignment", "MYSQL_PWD=rootroot PGPASSWORD=pgpgpg", "rootroot"),
        ("secret-assignment", "MYSQL_PWD=rootroot PGPASSWORD=pgpgpg", "pgpgpg"),
        ("secret-assignment", "SECRET_KEY = 'django-insecure-xyz'", "django-insecure-xyz"),
        ("secret-assignment", "const cfg = { accessToken: \"at-123456\", dbPass: \"pw-654321\" }", "at-123456"),
        ("secret-assignment", "const cfg = { accessToken: \"at-123456\", dbPass: \"pw-654321\" }", "pw-654321"),
        ("secret-assignment", "AccountKey=Zm9vYmFyYmF6cXV4", "Zm9vYmFyYmF6cXV4"),
    ];

    /// Text that must come out unchanged: ordinary words, ids, hashes, paths, numbers
    /// next to words that look like key names.
    const LOOK_ALIKES: &[&str] = &[
        "echo hello world",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "Merge: 1a2b3c4 5d6e7f8",
        "index 83db48f..bf269f4 100644",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "integrity sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
        "task 01JD3XK5Q7Z8Y9W2V3T4S5R6P7 done",
        "id 123e4567-e89b-12d3-a456-426614174000",
        "scikit-learn and sk-learn, task-runner, risk-assessment-matrix, desk-lamp",
        "pk_live_ is the publishable prefix; sk_live alone is a word",
        "max_tokens = 1024, input_tokens: 12, output_tokens: 10, tokenizer: bpe",
        "token_count: 1234, token_type: bearer, tokens: 5000",
        "bypass=true compass: north passed: 10 password_min_length = 8",
        "PASSWORD_FILE=/run/secrets/db docker login --password-stdin",
        "cargo publish --token-file ./tok --no-password --verbose",
        "https://github.com/org/repo.git http://localhost:8080/path?x=1 git@github.com:org/repo.git",
        "ssh://git@host:22/repo mailto:someone@example.com",
        "Authorization required; basic usage: run it with --help",
        "hf_hub_download npm_config_registry npm_package_version glpat alone",
        "eyes.eyelid.eyebrow and eyJ alone",
        "Finished `dev` profile [optimized + debuginfo] target(s) in 1m 35s",
        "test spool::task::tests::minimal_task_parses_with_defaults ... ok",
        "src/log/redact.rs:42:7 warning: unused variable `secret`",
        "primaryKey: id, sortKey: name, cacheKey: abc",
        "The bearer of this letter; a basic configuration.",
        "✓ 12 passed ─ 0 failed ─ ünïcödé text stays",
        "skeleton sketch skip sk- sk-short skill-tree; asking, whisk-ey, Task-Runner-Service",
        "http://user@host:8080/x http://[::1]:8080/ https://host:8443/a@b",
        "2026-01-01T10:00:00Z level=INFO target=architect::daemon elapsed_ms=12",
        "key: value, token_budget: 4096, secret_scanning: enabled, passes=3",
        "/home/dev/.ssh/id_ed25519.pub and ~/.config/gh/hosts.yml",
    ];

    #[test]
    fn the_shipped_rules_compile_and_each_is_exercised() {
        let r = Redactor::parse(DEFAULT_RULES).unwrap();
        for id in &r.ids {
            assert!(
                SECRETS.iter().any(|(rule, _, _)| rule == id),
                "rule {id} has no example in SECRETS"
            );
        }
    }

    #[test]
    fn every_secret_shape_is_redacted_by_its_rule() {
        let r = Redactor::parse(DEFAULT_RULES).unwrap();
        for (rule, text, secret) in SECRETS {
            assert!(
                r.matching(text).contains(rule),
                "{rule} does not match {text:?} (matching: {:?})",
                r.matching(text)
            );
            let out = redact(text);
            assert!(!out.contains(secret), "{rule}: {text:?} → {out:?}");
            assert!(out.contains(REDACTED), "{rule}: {text:?} → {out:?}");
        }
    }

    /// The twelve shapes the security audit of issue 9 tried, as it wrote them: each must
    /// come out without its secret.
    #[test]
    fn the_twelve_audited_shapes_are_redacted() {
        for (text, secret) in [
            ("OPENAI_API_KEY=sk-test-SECRET123", "SECRET123"),
            ("key sk-test-SECRET123 in a result", "SECRET123"),
            (
                "key sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",
                "abcdefghijklmnopqrstuvwxyz012345",
            ),
            ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghij"),
            ("git clone https://user:pw@host/repo", ":pw@"),
            ("Authorization: Basic dXNlcjpwdw==", "dXNlcjpwdw=="),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
            ),
            ("DB_PASS=correcthorse", "correcthorse"),
            ("mysql --password x db", "--password x"),
            ("glpat-xY9zAbCdEfGh1234IjKl", "xY9zAbCdEfGh1234IjKl"),
            ("sk_live_51HxYzAbCdEfGhIjKlMn", "51HxYzAbCdEfGhIjKlMn"),
            ("hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH", "aBcDeFgHiJkLmNoPqRsTuVwXyZ"),
            ("npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "aBcDeFgHiJkLmNoPqRsTuVwXyZ"),
        ] {
            let out = redact(text);
            assert!(!out.contains(secret), "{text:?} → {out:?}");
            assert!(out.contains(REDACTED), "{text:?} → {out:?}");
        }
    }

    #[test]
    fn look_alikes_are_left_alone() {
        for text in LOOK_ALIKES {
            assert_eq!(
                &redact(text),
                text,
                "matched by {:?}",
                rules().matching(text)
            );
        }
    }

    #[test]
    fn names_around_a_secret_are_kept() {
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
        assert_eq!(
            redact("OPENAI_API_KEY=sk-test-SECRET123"),
            "OPENAI_API_KEY=[REDACTED]"
        );
        assert_eq!(
            redact("https://user:pw1234@host/x"),
            "https://user:[REDACTED]@host/x"
        );
        assert_eq!(
            redact("run --password x1 now"),
            "run --password [REDACTED] now"
        );
        assert_eq!(redact("DB_PASS=hunter2"), "DB_PASS=[REDACTED]");
        assert_eq!(redact("echo hello world"), "echo hello world");
        // Already redacted text stays as it is.
        for done in ["DB_PASS=[REDACTED]", "Authorization: [REDACTED]"] {
            assert_eq!(redact(done), done);
        }
    }

    #[test]
    fn nested_values_are_redacted() {
        let v = redact_value(serde_json::json!({"a": ["token=supersecret1"], "n": 1}));
        assert_eq!(v, serde_json::json!({"a": ["token=[REDACTED]"], "n": 1}));
    }

    #[test]
    fn bad_rules_are_refused_with_their_id() {
        let e = Redactor::parse("[[rule]]\nid = 'x'\ndescription = ''\nregex = '(?<=a)b'\n")
            .unwrap_err();
        assert!(e.contains("rule x"), "{e}");
        let e = Redactor::parse(
            "[[rule]]\nid = 'y'\ndescription = ''\nregex = 'a(b)'\nsecret_group = 2\n",
        )
        .unwrap_err();
        assert!(e.contains("rule y") && e.contains("group 2"), "{e}");
    }
}

#[cfg(test)]
mod bench {
    /// A few KB of what event strings look like: build and git output, an event's JSON,
    /// a non-ASCII line; `cargo test --lib redact::bench -- --ignored --nocapture`
    /// prints the time.
    pub(crate) fn sample() -> String {
        let mut s = String::new();
        for i in 0..8 {
            s.push_str(&format!(
                "commit 3f786850e387550fdab836ed7e6dc881de23001{i}\nAuthor: Dev <dev@example.com>\n\
                 Date:   Sat Nov 21 10:00:0{i} 2026 +0000\n\n    Fix the login test (task-{i}, 01JD3XK5Q7Z8Y9W2V3T4S5R6P{i})\n\
                 index 83db48f..bf269f4 100644\n   Compiling architect v0.1.0 (/work/architect)\n\
                 {{\"provider\":\"local\",\"model\":\"qwen2.5-coder:7b\",\"max_tokens\":1024,\"input_tokens\":{i}}}\n\
                 test spool::task::tests::minimal_task_parses_with_defaults ... ok\n"
            ));
        }
        s
    }

    #[test]
    #[ignore = "a micro-benchmark; run with --ignored --nocapture"]
    fn redact_speed() {
        let clean = sample();
        let unicode = format!("{clean}✓ 12 passed ─ 0 failed ─ ünïcödé\n");
        let dirty = format!(
            "{clean}export OPENAI_API_KEY=sk-proj-ABCDEFGHIJKLMNOPQRSTUV\n\
             curl -H 'Authorization: Bearer abcdefghijklmnop.qrs' https://x\n"
        );
        for (name, text) in [
            ("clean", &clean),
            ("clean + 1 non-ASCII line", &unicode),
            ("with 2 secrets", &dirty),
        ] {
            let n = 2000;
            let _ = super::redact(text);
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(super::redact(std::hint::black_box(text)));
            }
            let per = t.elapsed().as_secs_f64() / f64::from(n);
            #[allow(clippy::cast_precision_loss)]
            let kb = text.len() as f64 / 1024.0;
            println!(
                "redact {name}: {kb:.1} KB in {:.1} µs ({:.1} µs/KB)",
                per * 1e6,
                per * 1e6 / kb
            );
        }
    }
}
