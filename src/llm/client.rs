//! One request to one provider, non-streaming, parsed into a [`Reply`].
//!
//! Request and response shapes follow each API's documentation: Ollama `POST /api/chat`
//! (`message.content`, `prompt_eval_count`, `eval_count`); OpenAI Chat Completions
//! (`choices[0].message.content`, `usage.prompt_tokens` — cached tokens included, given in
//! `prompt_tokens_details.cached_tokens` — `completion_tokens`, reasoning in
//! `completion_tokens_details.reasoning_tokens`); Anthropic Messages (`content[].text`,
//! `usage.input_tokens` — cache excluded — `cache_read_input_tokens`,
//! `cache_creation_input_tokens`, `output_tokens`); Gemini `generateContent`
//! (`candidates[0].content.parts[].text`, `usageMetadata.promptTokenCount` — cached
//! included, `cachedContentTokenCount` — `candidatesTokenCount`, `thoughtsTokenCount`).

use std::time::Duration;

use serde_json::{json, Value};

use super::{Kind, ProviderConfig, Usage};

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The reply text.
    pub text: String,
    /// The model the API says answered (else the configured one).
    pub model: String,
    /// Token counts.
    pub usage: Usage,
    /// HTTP status (200).
    pub status: u16,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// HTTP status, when a response came.
    pub status: Option<u16>,
    /// Whether trying again (later, or elsewhere) may work: timeouts, connection errors,
    /// 5xx, 429, unreadable bodies. 4xx client errors are not retried.
    pub retryable: bool,
    /// The server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// What went wrong, with the API key redacted.
    pub message: String,
}

fn redact(message: &str, key: Option<&str>) -> String {
    let mut m = message.to_string();
    if let Some(k) = key.filter(|k| k.len() >= 4) {
        m = m.replace(k, "[REDACTED]");
    }
    crate::redact::redact(&m)
}

/// Sends `prompt` to `p` and parses the reply.
///
/// # Errors
/// A [`CallError`] saying whether the failure is retryable; its message never holds the key.
pub async fn call(
    http: &reqwest::Client,
    p: &ProviderConfig,
    key: Option<&str>,
    prompt: &str,
) -> Result<Reply, CallError> {
    let base = p.base_url.trim_end_matches('/');
    let (url, body) = match p.kind {
        Kind::Ollama => (
            format!("{base}/api/chat"),
            json!({"model": p.model, "stream": false,
                   "messages": [{"role": "user", "content": prompt}]}),
        ),
        Kind::Openai => (
            format!("{base}/chat/completions"),
            json!({"model": p.model, "stream": false, "max_tokens": p.max_tokens,
                   "messages": [{"role": "user", "content": prompt}]}),
        ),
        Kind::Anthropic => (
            format!("{base}/v1/messages"),
            json!({"model": p.model, "max_tokens": p.max_tokens,
                   "messages": [{"role": "user", "content": prompt}]}),
        ),
        Kind::Gemini => (
            format!("{base}/v1beta/models/{}:generateContent", p.model),
            json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                   "generationConfig": {"maxOutputTokens": p.max_tokens}}),
        ),
    };
    let mut req = http
        .post(&url)
        .timeout(Duration::from_secs(p.timeout_s))
        .json(&body);
    if let Some(k) = key {
        req = match p.kind {
            Kind::Anthropic => req
                .header("x-api-key", k)
                .header("anthropic-version", "2023-06-01"),
            Kind::Gemini => req.header("x-goog-api-key", k),
            Kind::Openai | Kind::Ollama => req.bearer_auth(k),
        };
    } else if p.kind == Kind::Anthropic {
        req = req.header("anthropic-version", "2023-06-01");
    }
    let resp = req.send().await.map_err(|e| CallError {
        status: None,
        retryable: true,
        retry_after: None,
        message: redact(
            &format!(
                "{}: {}",
                if e.is_timeout() {
                    "timed out"
                } else {
                    "request failed"
                },
                e
            ),
            key,
        ),
    })?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    let text = resp.text().await.map_err(|e| CallError {
        status: Some(status),
        retryable: true,
        retry_after,
        message: redact(&format!("reading the body: {e}"), key),
    })?;
    if !(200..300).contains(&status) {
        let snippet: String = text.chars().take(300).collect();
        return Err(CallError {
            status: Some(status),
            retryable: status == 429 || status == 408 || status >= 500,
            retry_after,
            message: redact(&format!("HTTP {status}: {snippet}"), key),
        });
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| CallError {
        status: Some(status),
        retryable: true,
        retry_after: None,
        message: redact(&format!("malformed response body: {e}"), key),
    })?;
    parse(p, &v, status).ok_or_else(|| CallError {
        status: Some(status),
        retryable: true,
        retry_after: None,
        message: format!(
            "response without a reply: {}",
            redact(&text.chars().take(200).collect::<String>(), key)
        ),
    })
}

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for k in path {
        match cur.get(k) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

/// Reads the reply text and usage out of a response body.
fn parse(p: &ProviderConfig, v: &Value, status: u16) -> Option<Reply> {
    let model = v
        .get("model")
        .or_else(|| v.get("modelVersion"))
        .and_then(Value::as_str)
        .unwrap_or(&p.model)
        .to_string();
    let (text, usage) = match p.kind {
        Kind::Ollama => (
            v.pointer("/message/content")?.as_str()?.to_string(),
            Usage {
                input: n(v, &["prompt_eval_count"]),
                output: n(v, &["eval_count"]),
                ..Usage::default()
            },
        ),
        Kind::Openai => {
            let prompt = n(v, &["usage", "prompt_tokens"]);
            let cached = n(v, &["usage", "prompt_tokens_details", "cached_tokens"]);
            let completion = n(v, &["usage", "completion_tokens"]);
            let reasoning = n(
                v,
                &["usage", "completion_tokens_details", "reasoning_tokens"],
            );
            (
                v.pointer("/choices/0/message/content")?
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                Usage {
                    input: prompt.saturating_sub(cached),
                    output: completion.saturating_sub(reasoning),
                    cache_read: cached,
                    cache_write: 0,
                    reasoning,
                },
            )
        }
        Kind::Anthropic => (
            v.get("content")?
                .as_array()?
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            Usage {
                input: n(v, &["usage", "input_tokens"]),
                output: n(v, &["usage", "output_tokens"]),
                cache_read: n(v, &["usage", "cache_read_input_tokens"]),
                cache_write: n(v, &["usage", "cache_creation_input_tokens"]),
                reasoning: 0,
            },
        ),
        Kind::Gemini => {
            let prompt = n(v, &["usageMetadata", "promptTokenCount"]);
            let cached = n(v, &["usageMetadata", "cachedContentTokenCount"]);
            (
                v.pointer("/candidates/0/content/parts")?
                    .as_array()?
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                Usage {
                    input: prompt.saturating_sub(cached),
                    output: n(v, &["usageMetadata", "candidatesTokenCount"]),
                    cache_read: cached,
                    cache_write: 0,
                    reasoning: n(v, &["usageMetadata", "thoughtsTokenCount"]),
                },
            )
        }
    };
    Some(Reply {
        text,
        model,
        usage,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(kind: Kind) -> ProviderConfig {
        ProviderConfig {
            name: "p".into(),
            kind,
            base_url: "http://127.0.0.1:1".into(),
            model: "m".into(),
            api_key_env: None,
            api_key_file: None,
            timeout_s: 1,
            max_tokens: 16,
            price: super::super::Price::default(),
            budget: super::super::Budget::default(),
        }
    }

    #[test]
    fn usage_is_normalised_across_apis() {
        let openai = json!({"model": "gpt", "choices": [{"message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 30,
                      "prompt_tokens_details": {"cached_tokens": 40},
                      "completion_tokens_details": {"reasoning_tokens": 10}}});
        let r = parse(&provider(Kind::Openai), &openai, 200).unwrap();
        assert_eq!(r.text, "hi");
        assert_eq!(
            r.usage,
            Usage {
                input: 60,
                output: 20,
                cache_read: 40,
                cache_write: 0,
                reasoning: 10
            }
        );
        let anthropic = json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3,
                      "cache_creation_input_tokens": 2}});
        let r = parse(&provider(Kind::Anthropic), &anthropic, 200).unwrap();
        assert_eq!((r.text.as_str(), r.model.as_str()), ("ab", "m"));
        assert_eq!(
            r.usage,
            Usage {
                input: 5,
                output: 7,
                cache_read: 3,
                cache_write: 2,
                reasoning: 0
            }
        );
        let gemini = json!({"candidates": [{"content": {"parts": [{"text": "g"}]}}],
            "usageMetadata": {"promptTokenCount": 50, "cachedContentTokenCount": 20,
                              "candidatesTokenCount": 9, "thoughtsTokenCount": 4}});
        let r = parse(&provider(Kind::Gemini), &gemini, 200).unwrap();
        assert_eq!(
            r.usage,
            Usage {
                input: 30,
                output: 9,
                cache_read: 20,
                cache_write: 0,
                reasoning: 4
            }
        );
        let ollama = json!({"message": {"content": "o"}, "prompt_eval_count": 11, "eval_count": 3});
        let r = parse(&provider(Kind::Ollama), &ollama, 200).unwrap();
        assert_eq!((r.usage.input, r.usage.output), (11, 3));
        assert!(parse(&provider(Kind::Openai), &json!({"oops": 1}), 200).is_none());
    }

    #[test]
    fn keys_are_redacted_from_messages() {
        let m = redact(
            "401: bad key abcd-1234-SECRET in header",
            Some("abcd-1234-SECRET"),
        );
        assert!(!m.contains("abcd-1234-SECRET"), "{m}");
    }
}
