//! `config/prices.toml`: what the models agent CLIs use cost, for `agent_usage` events
//! and `stats --cost`.
//!
//! ```toml
//! [[model]]
//! pattern = "claude-sonnet-*"   # `*` matches any run of characters; or name = "…"
//! input = 3.0                   # USD per million tokens
//! output = 15.0
//! cache_read = 0.30             # default: the input price
//! cache_write = 3.75            # default: the input price
//! reasoning = 15.0              # default: the output price
//! ```
//!
//! A model takes the first entry whose `name` is its exact name, else the first whose
//! `pattern` matches, in file order. A model no entry covers costs nothing and its events
//! say `"priced": false`.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::llm::{Price, Usage};

/// One `[[model]]` entry (unknown keys are refused by [`Price`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ModelPrice {
    /// The model's exact name.
    #[serde(default)]
    pub name: Option<String>,
    /// A glob over model names (`*` only).
    #[serde(default)]
    pub pattern: Option<String>,
    /// USD per million tokens.
    #[serde(flatten)]
    pub price: Price,
}

/// The `config/prices.toml` that `architect init` writes (examples, commented out).
pub const DEFAULT_PRICES: &str = include_str!("../../config/prices.toml");

/// The parsed file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Entries in file order.
    #[serde(default)]
    pub model: Vec<ModelPrice>,
}

impl Prices {
    /// Loads `<config_dir>/prices.toml` (absent: no prices).
    ///
    /// # Errors
    /// [`Error::Config`] for bad TOML or an entry with neither or both of `name` and
    /// `pattern`; [`Error::Io`] when the file cannot be read.
    pub fn load(config_dir: &Path) -> Result<Self> {
        let path = config_dir.join("prices.toml");
        let prices: Self = super::read_toml(&path)?;
        let bad = |message: String| Error::Config {
            path: path.clone(),
            message,
        };
        for (i, m) in prices.model.iter().enumerate() {
            if m.name.is_some() == m.pattern.is_some() {
                return Err(bad(format!(
                    "model[{i}]: give exactly one of `name` and `pattern`"
                )));
            }
        }
        Ok(prices)
    }

    /// The price of `model`, if an entry covers it.
    #[must_use]
    pub fn of(&self, model: &str) -> Option<&Price> {
        self.model
            .iter()
            .find(|m| m.name.as_deref() == Some(model))
            .or_else(|| {
                self.model
                    .iter()
                    .find(|m| m.pattern.as_deref().is_some_and(|p| glob(p, model)))
            })
            .map(|m| &m.price)
    }

    /// What `usage` of `model` costs in USD (`None`: the model has no price).
    #[must_use]
    pub fn cost(&self, model: Option<&str>, usage: &Usage) -> Option<f64> {
        self.of(model?).map(|p| p.cost(usage))
    }
}

/// `*`-only glob match.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_win_over_patterns_and_cost_is_per_million() {
        let p: Prices = toml::from_str(
            r#"
[[model]]
pattern = "claude-*"
input = 3.0
output = 15.0
[[model]]
name = "claude-haiku"
input = 1.0
output = 5.0
cache_read = 0.1
"#,
        )
        .unwrap();
        let u = Usage {
            input: 1_000_000,
            output: 100_000,
            cache_read: 1_000_000,
            ..Usage::default()
        };
        assert!((p.cost(Some("claude-haiku"), &u).unwrap() - (1.0 + 0.5 + 0.1)).abs() < 1e-12);
        assert!((p.cost(Some("claude-sonnet-9"), &u).unwrap() - (3.0 + 1.5 + 3.0)).abs() < 1e-12);
        assert_eq!(p.cost(Some("gpt-x"), &u), None);
        assert_eq!(p.cost(None, &u), None);
    }

    #[test]
    fn the_default_file_parses() {
        let p: Prices = toml::from_str(DEFAULT_PRICES).unwrap();
        assert!(p.model.is_empty(), "the examples are commented out");
    }

    #[test]
    fn globs_match_inner_parts_in_order() {
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXcYYb"));
        assert!(glob("*", "anything"));
        assert!(!glob("ab*", "a"));
    }
}
