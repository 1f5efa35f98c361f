//! The dashboard's token and the checks every request passes.
//!
//! - The token: 32 random bytes as 64 hex digits in `spool/locks/serve.token`, mode 0600,
//!   written by `architect init` (or by the first `architect serve`). `locks/` is
//!   node-local (never synced: `.stignore` lists `/locks`) and owner-only (the daemon
//!   refuses a spool whose `locks/` others can write), and it sits beside the daemon's
//!   lock: whoever can read it can already run every verb. `config/` is git-tracked,
//!   so the token is not there.
//! - A browser logs in once through `/login?token=…` (the URL `architect serve` prints):
//!   it sets the cookie `architect_token`, `HttpOnly` (page scripts never see it) and
//!   `SameSite=Strict` (another site's page cannot make the browser send it). Scripts send
//!   `Authorization: Bearer <token>` instead.
//! - Every write (any method but GET/HEAD) needs the token, and a write whose `Origin`
//!   is not this server's is refused even with it.
//! - Reads without the token are allowed only when bound to loopback and only for a
//!   `Host` that names loopback (a page of another site that re-points its DNS name to
//!   127.0.0.1 sends its own name as `Host`). Beyond loopback every request needs it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use architect::spool::Spool;

/// The cookie that carries the token after `/login`.
pub const COOKIE: &str = "architect_token";

/// The dashboard's bearer token (its `Debug` does not show it).
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// The token's text, for the login URL printed to the terminal.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the token, compared in constant time.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The token file of a spool: `spool/locks/serve.token`.
pub fn token_path(spool: &Spool) -> PathBuf {
    spool.dir("locks").join("serve.token")
}

/// Reads the dashboard token, creating it when absent: 64 hex digits from
/// `/dev/urandom`, written 0600. Returns the token, its path, and whether it was created.
///
/// # Errors
/// The file cannot be read or written; it exists but does not hold 64 hex digits.
pub fn ensure_token(spool: &Spool) -> Result<(Token, PathBuf, bool)> {
    let path = token_path(spool);
    match architect::durable::read_regular(&path, 4096) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!(
                    "{} does not hold a token (64 hex digits): remove it and run \
                     `architect serve` again to make a new one",
                    path.display()
                );
            }
            Ok((Token(text), path, false))
        }
        Err(architect::durable::ReadRefusal::Gone) => {
            let mut raw = [0u8; 32];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
                &mut raw,
            )
            .context("reading /dev/urandom")?;
            let text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            architect::durable::write_atomic(&path, format!("{text}\n").as_bytes())
                .with_context(|| format!("writing the dashboard token {}", path.display()))?;
            Ok((Token(text), path, true))
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// The token a request carries: `Authorization: Bearer …`, else the login cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether `host` (a `Host` header) names a loopback address: `localhost`, `127.x`,
/// `[::1]`, with any port.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// Every request passes here first (the rules in the module doc).
pub async fn guard(State(st): State<Arc<super::AppState>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let authed = presented(headers).is_some_and(|t| st.token.matches(t));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if req.uri().path() == "/login" {
        return next.run(req).await;
    }
    if !read {
        if !authed {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this action needs the dashboard token: open the login URL `architect serve` \
                 printed, or send `Authorization: Bearer <token>` (spool/locks/serve.token)",
            );
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let same = origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
            if !same {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "cross-origin write refused: the Origin is not this dashboard",
                );
            }
        }
    } else if !(authed || (st.bound.ip().is_loopback() && loopback_host(host))) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this dashboard needs its token for every request (bound beyond loopback): open \
             the login URL `architect serve` printed",
        );
    }
    next.run(req).await
}

/// `GET /login?token=…`.
#[derive(Debug, Deserialize)]
pub struct Login {
    token: String,
}

/// Checks the token and sets the login cookie, then sends the browser to `/`.
pub async fn login(State(st): State<Arc<super::AppState>>, Query(q): Query<Login>) -> Response {
    if !st.token.matches(&q.token) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "wrong token: use the login URL `architect serve` printed (spool/locks/serve.token)",
        );
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        st.token.reveal()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_only_itself() {
        let t = Token("ab".repeat(32));
        assert!(t.matches(&"ab".repeat(32)));
        assert!(!t.matches(&"ab".repeat(31)));
        assert!(!t.matches(&format!("{}ac", "ab".repeat(31))));
        assert!(!t.matches(""));
    }

    #[test]
    fn loopback_hosts_are_told_from_other_names() {
        for h in [
            "127.0.0.1:7878",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "127.1.2.3",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:7878",
            "10.0.0.1:7878",
            "[::2]:1",
            "",
            "localhost.evil:1",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn the_token_comes_from_the_bearer_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert(
            header::COOKIE,
            "a=b; architect_token=xyz; c=d".parse().unwrap(),
        );
        assert_eq!(presented(&h), Some("xyz"));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented(&h), None);
    }

    #[test]
    fn a_token_is_created_once_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"));
        spool.init().unwrap();
        let (a, path, created) = ensure_token(&spool).unwrap();
        assert!(created);
        assert_eq!(a.reveal().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, _, created) = ensure_token(&spool).unwrap();
        assert!(!created);
        assert!(a.matches(b.reveal()));
        std::fs::write(&path, "short\n").unwrap();
        let err = ensure_token(&spool).unwrap_err().to_string();
        assert!(err.contains("does not hold a token"), "{err}");
    }
}
