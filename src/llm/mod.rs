//! LLM providers: HTTP model APIs as sessions that answer a prompt with a reply, routed
//! local first with retries, failover and circuit breakers, and priced per call.
//!
//! - [`ProvidersFile`]: `config/providers.toml` (`[[provider]]` tables, `[routing]`,
//!   `[retry]`, `[breaker]`).
//! - [`client`]: one request to one provider (Ollama `/api/chat`, OpenAI-compatible
//!   `/chat/completions`, Anthropic `/v1/messages`, Gemini `:generateContent`), parsed into
//!   a reply and its [`Usage`].
//! - [`breaker`]: the circuit breaker of each provider, kept in
//!   `spool/providers/<name>.json`.
//! - [`router`]: the chain for a request, retries with backoff and `Retry-After`, failover,
//!   and an `llm_call` event per attempt.
//!
//! API keys come from an environment variable or a 0600 key file, never from the config
//! file itself; they are never logged and are redacted from error messages.

pub mod breaker;
pub mod budget;
pub mod client;
pub mod router;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

// Task complexity, a plain data type the task format shares.
pub use crate::types::Complexity;

/// The `config/providers.toml` that ships (commented; no providers configured).
pub const DEFAULT_PROVIDERS: &str = include_str!("../../config/providers.toml");

/// API kind of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Ollama's native API: `POST {base_url}/api/chat`.
    Ollama,
    /// Any OpenAI-compatible server: `POST {base_url}/chat/completions` (`base_url` ends
    /// in `/v1`).
    Openai,
    /// Anthropic Messages: `POST {base_url}/v1/messages`.
    Anthropic,
    /// Gemini: `POST {base_url}/v1beta/models/{model}:generateContent`.
    Gemini,
}

/// Prices in USD per million tokens, by token kind. Absent = free (a local model).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input (prompt) tokens not read from a cache.
    #[serde(default)]
    pub input: f64,
    /// Output tokens (reasoning tokens included unless `reasoning` is set).
    #[serde(default)]
    pub output: f64,
    /// Input tokens read from the provider's prompt cache (default: the input price).
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Input tokens written to the prompt cache (default: the input price).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Reasoning tokens, when the provider bills them apart (default: the output price).
    #[serde(default)]
    pub reasoning: Option<f64>,
}

/// Token counts of one call, normalised across APIs: `input` excludes cached tokens,
/// `output` excludes reasoning tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens billed at the input price.
    pub input: u64,
    /// Output tokens billed at the output price.
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
    /// Reasoning ("thinking") tokens.
    pub reasoning: u64,
}

impl Price {
    /// Cost of `usage` in USD: each token kind times its price per million.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn cost(&self, u: &Usage) -> f64 {
        let per = |tokens: u64, usd_per_million: f64| tokens as f64 * usd_per_million / 1e6;
        per(u.input, self.input)
            + per(u.output, self.output)
            + per(u.cache_read, self.cache_read.unwrap_or(self.input))
            + per(u.cache_write, self.cache_write.unwrap_or(self.input))
            + per(u.reasoning, self.reasoning.unwrap_or(self.output))
    }
}

/// One `[[provider]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name, `^[A-Za-z0-9_-]{1,64}$`.
    pub name: String,
    /// API kind.
    pub kind: Kind,
    /// Base URL (`http://127.0.0.1:11434` for Ollama, `https://api.openai.com/v1`, …).
    pub base_url: String,
    /// Model name sent to the API.
    pub model: String,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the API key (must be mode 0600 or stricter).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Seconds one HTTP request may take (default 120).
    #[serde(default = "d_timeout")]
    pub timeout_s: u64,
    /// Most output tokens asked for (default 1024).
    #[serde(default = "d_max_tokens")]
    pub max_tokens: u32,
    /// Prices (USD per million tokens); absent = free.
    #[serde(default)]
    pub price: Price,
    /// This provider's own budget.
    #[serde(default)]
    pub budget: Budget,
}

/// Spending limits in USD per UTC day and per UTC month (absent = none).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most USD per UTC day.
    #[serde(default)]
    pub daily_usd: Option<f64>,
    /// Most USD per UTC calendar month.
    #[serde(default)]
    pub monthly_usd: Option<f64>,
}

fn d_timeout() -> u64 {
    120
}
fn d_max_tokens() -> u32 {
    1024
}

/// `[retry]`: retries of one provider before failing over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts per provider, first one included (default 3).
    #[serde(default = "d_attempts")]
    pub attempts: u32,
    /// First backoff in ms, doubled per retry, with ±50% jitter (default 250).
    #[serde(default = "d_base_ms")]
    pub base_ms: u64,
    /// Longest backoff, and longest `Retry-After` honoured, in ms (default 30000).
    #[serde(default = "d_max_ms")]
    pub max_ms: u64,
}

fn d_attempts() -> u32 {
    3
}
fn d_base_ms() -> u64 {
    250
}
fn d_max_ms() -> u64 {
    30_000
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            attempts: d_attempts(),
            base_ms: d_base_ms(),
            max_ms: d_max_ms(),
        }
    }
}

/// `[breaker]`: when a provider's circuit opens and how it closes again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failed calls that open the circuit (default 5).
    #[serde(default = "d_failures")]
    pub failures: u32,
    /// Seconds an open circuit waits before one probe call (half-open) (default 60).
    #[serde(default = "d_open_s")]
    pub open_s: u64,
}

fn d_failures() -> u32 {
    5
}
fn d_open_s() -> u64 {
    60
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: d_failures(),
            open_s: d_open_s(),
        }
    }
}

/// `[routing.classify]`: how a request that names neither a provider nor a complexity
/// gets one, from its prompt and its task's role. Checked in order: role, complex
/// keywords, simple keywords, size; nothing matched → `standard`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRules {
    /// Role → complexity (`reviewer = "complex"`).
    #[serde(default)]
    pub roles: BTreeMap<String, Complexity>,
    /// A prompt containing one of these words (case-insensitive, whole words) is complex.
    #[serde(default)]
    pub complex_keywords: Vec<String>,
    /// A prompt containing one of these words is simple.
    #[serde(default)]
    pub simple_keywords: Vec<String>,
    /// A prompt longer than this many characters is complex.
    #[serde(default)]
    pub complex_if_chars_over: Option<usize>,
    /// A prompt shorter than this many characters is simple.
    #[serde(default)]
    pub simple_if_chars_under: Option<usize>,
}

impl ClassifyRules {
    /// Whether any rule is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The complexity of `prompt` for a task with `role`.
    #[must_use]
    pub fn classify(&self, prompt: &str, role: Option<&str>) -> Complexity {
        if let Some(c) = role.and_then(|r| self.roles.get(r)) {
            return *c;
        }
        let words: std::collections::HashSet<String> = prompt
            .split(|c: char| !c.is_alphanumeric() && c != '-' && c != '_')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let has = |list: &[String]| list.iter().any(|k| words.contains(&k.to_lowercase()));
        if has(&self.complex_keywords) {
            return Complexity::Complex;
        }
        if has(&self.simple_keywords) {
            return Complexity::Simple;
        }
        let chars = prompt.chars().count();
        if self.complex_if_chars_over.is_some_and(|n| chars > n) {
            return Complexity::Complex;
        }
        if self.simple_if_chars_under.is_some_and(|n| chars < n) {
            return Complexity::Simple;
        }
        Complexity::Standard
    }
}

/// `[routing]`: which providers a request tries, in order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSettings {
    /// Rules that give a request without a complexity one.
    #[serde(default)]
    pub classify: ClassifyRules,
    /// The default chain (default: every provider in file order, Ollama ones first).
    #[serde(default)]
    pub chain: Vec<String>,
    /// A chain per complexity (`simple = ["local", "cloud"]`); a complexity not listed
    /// uses `chain`.
    #[serde(default)]
    pub complexity: BTreeMap<Complexity, Vec<String>>,
}

/// `config/providers.toml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersFile {
    /// The providers.
    #[serde(default)]
    pub provider: Vec<ProviderConfig>,
    /// Routing.
    #[serde(default)]
    pub routing: RoutingSettings,
    /// Retries.
    #[serde(default)]
    pub retry: RetrySettings,
    /// Circuit breakers.
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// The budget of all providers together.
    #[serde(default)]
    pub budget: Budget,
}

impl ProvidersFile {
    /// Loads `<config_dir>/providers.toml` (none configured when absent) and checks it.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file: TOML syntax, unknown keys, a duplicate or bad
    /// name, a chain naming an unknown provider, an API key written in the file.
    pub fn load(config_dir: &Path) -> Result<Self> {
        let path = config_dir.join("providers.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io("reading config", &path, e)),
        };
        Self::parse(&text, &path)
    }

    /// Parses and checks the file's text (`path` is for error messages).
    ///
    /// # Errors
    /// As [`ProvidersFile::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        // A key pasted into the file is refused before anything else reads it.
        if let Ok(raw) = toml::from_str::<toml::Value>(text) {
            if let Some(list) = raw.get("provider").and_then(toml::Value::as_array) {
                for p in list {
                    if p.get("api_key").is_some() {
                        return Err(bad(
                            "api_key in the config file: keys never go in git-tracked config; \
                             use api_key_env (an environment variable) or api_key_file (mode 0600)"
                                .into(),
                        ));
                    }
                }
            }
        }
        let file: Self = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        for p in &file.provider {
            if !crate::types::valid_id(&p.name) {
                return Err(bad(format!(
                    "provider name {:?} must match ^[A-Za-z0-9_-]{{1,64}}$",
                    p.name
                )));
            }
            if !seen.insert(p.name.clone()) {
                return Err(bad(format!("provider {:?} is defined twice", p.name)));
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(bad(format!(
                    "provider {:?}: base_url must start with http:// or https://",
                    p.name
                )));
            }
        }
        let chains = std::iter::once(&file.routing.chain).chain(file.routing.complexity.values());
        for chain in chains {
            for name in chain {
                if !seen.contains(name) {
                    return Err(bad(format!(
                        "routing names provider {name:?}, which is not configured"
                    )));
                }
            }
        }
        Ok(file)
    }

    /// The provider called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&ProviderConfig> {
        self.provider.iter().find(|p| p.name == name)
    }

    /// The providers a request tries, in order: `provider` alone when named, else those
    /// serving `model` (in chain order), else the chain for `complexity`, else `[routing]
    /// chain`, else every provider with the Ollama ones first (local first).
    #[must_use]
    pub fn chain(
        &self,
        provider: Option<&str>,
        model: Option<&str>,
        complexity: Option<Complexity>,
    ) -> Vec<String> {
        if let Some(p) = provider {
            return vec![p.to_string()];
        }
        if let Some(m) = model {
            return self
                .chain(None, None, None)
                .into_iter()
                .filter(|n| self.get(n).is_some_and(|p| p.model == m))
                .collect();
        }
        if let Some(c) = complexity.and_then(|c| self.routing.complexity.get(&c)) {
            return c.clone();
        }
        if !self.routing.chain.is_empty() {
            return self.routing.chain.clone();
        }
        let mut all: Vec<&ProviderConfig> = self.provider.iter().collect();
        all.sort_by_key(|p| p.kind != Kind::Ollama);
        all.into_iter().map(|p| p.name.clone()).collect()
    }
}

impl ProviderConfig {
    /// The API key, from `api_key_env` or `api_key_file` (`None` when neither is set).
    ///
    /// # Errors
    /// [`Error::Config`] when the variable is unset or empty, or the key file is missing,
    /// empty, or readable by group or others.
    pub fn api_key(&self) -> Result<Option<String>> {
        let bad = |message: String| Error::Config {
            path: PathBuf::from("providers.toml"),
            message: format!("provider {:?}: {message}", self.name),
        };
        if let Some(var) = &self.api_key_env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
                _ => Err(bad(format!("api_key_env: ${var} is not set"))),
            };
        }
        if let Some(file) = &self.api_key_file {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(file)
                .map_err(|e| bad(format!("api_key_file {}: {e}", file.display())))?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(bad(format!(
                    "api_key_file {} is readable by others (mode {:o}); chmod 600 it",
                    file.display(),
                    meta.permissions().mode() & 0o777
                )));
            }
            let key = std::fs::read_to_string(file)
                .map_err(|e| bad(format!("api_key_file {}: {e}", file.display())))?;
            let key = key.trim().to_string();
            if key.is_empty() {
                return Err(bad(format!("api_key_file {} is empty", file.display())));
            }
            return Ok(Some(key));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_follows_the_price_table_per_token_kind() {
        let p = Price {
            input: 3.0,
            output: 15.0,
            cache_read: Some(0.3),
            cache_write: Some(3.75),
            reasoning: None,
        };
        let u = Usage {
            input: 1_000_000,
            output: 200_000,
            cache_read: 500_000,
            cache_write: 100_000,
            reasoning: 10_000,
        };
        // 3 + 3 + 0.15 + 0.375 + 0.15
        assert!((p.cost(&u) - 6.675).abs() < 1e-9, "{}", p.cost(&u));
        assert!(
            Price::default().cost(&u).abs() < f64::EPSILON,
            "local is free"
        );
    }

    #[test]
    fn keys_in_the_file_and_unknown_chain_names_are_refused() {
        let path = Path::new("providers.toml");
        let e = ProvidersFile::parse(
            "[[provider]]\nname='a'\nkind='openai'\nbase_url='http://x/v1'\nmodel='m'\napi_key='sk-secret'\n",
            path,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("api_key_env") && !e.contains("sk-secret"), "{e}");
        let e = ProvidersFile::parse("[routing]\nchain = ['nope']\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn classify_rules_route_by_role_keywords_and_size() {
        let r: ClassifyRules = toml::from_str(
            "roles = { reviewer = 'complex' }\ncomplex_keywords = ['architecture']\n\
             simple_keywords = ['typo']\ncomplex_if_chars_over = 50\nsimple_if_chars_under = 10\n",
        )
        .unwrap();
        assert_eq!(r.classify("fix it", Some("reviewer")), Complexity::Complex);
        assert_eq!(
            r.classify("Review the Architecture.", None),
            Complexity::Complex
        );
        assert_eq!(
            r.classify("fix the typo in the long readme text please", None),
            Complexity::Simple
        );
        assert_eq!(
            r.classify("typography", None),
            Complexity::Standard,
            "whole words"
        );
        assert_eq!(r.classify("hi", None), Complexity::Simple);
        assert_eq!(r.classify(&"x ".repeat(40), None), Complexity::Complex);
        assert!(ClassifyRules::default().is_empty());
    }

    #[test]
    fn default_chain_is_local_first() {
        let f = ProvidersFile::parse(
            "[[provider]]\nname='cloud'\nkind='anthropic'\nbase_url='https://x'\nmodel='m'\n\
             [[provider]]\nname='local'\nkind='ollama'\nbase_url='http://127.0.0.1:11434'\nmodel='q'\n\
             [routing.complexity]\ncomplex = ['cloud']\n",
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(f.chain(None, None, None), ["local", "cloud"]);
        assert_eq!(f.chain(None, None, Some(Complexity::Complex)), ["cloud"]);
        assert_eq!(
            f.chain(None, None, Some(Complexity::Simple)),
            ["local", "cloud"]
        );
        assert_eq!(f.chain(None, Some("q"), None), ["local"]);
        assert!(f.chain(None, Some("nope"), None).is_empty());
        assert_eq!(f.chain(Some("cloud"), None, None), ["cloud"]);
    }
}
