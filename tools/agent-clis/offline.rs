//! Running the real agent CLIs offline, against a local model server
//! (`tools/mock-llm`): the set-up the end-to-end tests and `bench --fidelity` share.
//! Test and benchmark code, so not in the library: the binary's `cli/bench/` and
//! `tests/agents/` each include this file (`#[path]`).
//!
//! Each CLI gets a private `HOME` (and `XDG_*` under it) with the configuration that
//! points it at the server and skips what needs the internet (`/work/shared/AGENT-CLIS.md`
//! has the facts): Claude Code `~/.claude.json` with onboarding done and the work dir
//! trusted, `ANTHROPIC_BASE_URL`; Codex a `CODEX_HOME` whose `config.toml` names the
//! server as a Responses-API provider; Gemini CLI API-key auth and
//! `GOOGLE_GEMINI_BASE_URL`. First-run questions that remain (Claude's "use this API
//! key?", the folder trust dialogs) are left to the profiles' start-up rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One CLI to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cli {
    /// The built-in profile (`claude-code`, `codex`, `gemini`).
    pub profile: &'static str,
    /// The program in `node_modules/.bin`.
    pub binary: &'static str,
    /// Arguments every session gets.
    pub args: &'static [&'static str],
    /// A path its model requests go to.
    pub api_path: &'static str,
}

/// Claude Code.
pub const CLAUDE: Cli = Cli {
    profile: "claude-code",
    binary: "claude",
    args: &[],
    api_path: "/v1/messages",
};

/// Codex CLI.
pub const CODEX: Cli = Cli {
    profile: "codex",
    binary: "codex",
    args: &[],
    api_path: "/v1/responses",
};

/// Gemini CLI, with a fixed model (on "Auto" it first asks a small model to route).
pub const GEMINI: Cli = Cli {
    profile: "gemini",
    binary: "gemini",
    args: &["-m", "gemini-2.5-flash"],
    api_path: ":streamGenerateContent",
};

impl Cli {
    /// The CLI for a short name: `claude`/`claude-code`, `codex`, `gemini`.
    #[must_use]
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "claude" | "claude-code" => Some(CLAUDE),
            "codex" => Some(CODEX),
            "gemini" => Some(GEMINI),
            _ => None,
        }
    }
}

/// Where `tools/agent-clis/install` puts the pinned CLIs' programs:
/// `$ARCHITECT_AGENT_CLIS/node_modules/.bin`, default
/// `~/.cache/architect/agent-clis/node_modules/.bin`.
#[must_use]
pub fn clis_dir() -> PathBuf {
    let base = std::env::var_os("ARCHITECT_AGENT_CLIS").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/architect/agent-clis")
        },
        PathBuf::from,
    );
    base.join("node_modules/.bin")
}

/// Makes `dir` a git repository with one commit (the CLIs want one).
///
/// # Errors
/// When git is missing or fails.
pub fn git_workdir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("README.md"),
        "A project for an offline agent run.\n",
    )?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["config", "user.email", "agent@example.invalid"],
        &["config", "user.name", "agent"],
        &["add", "README.md"],
        &["commit", "-q", "-m", "initial"],
    ] {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("running git (is it installed?): {e}"))
            })?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    Ok(())
}

/// Writes `cli`'s configuration into the private `home` for a session working in `work`
/// against the model server at `base_url` (`http://127.0.0.1:PORT`); returns the
/// session's environment.
///
/// # Errors
/// When a file cannot be written.
pub fn prepare_home(
    cli: &Cli,
    home: &Path,
    work: &Path,
    base_url: &str,
) -> std::io::Result<BTreeMap<String, String>> {
    std::fs::create_dir_all(home)?;
    let mut env = BTreeMap::new();
    env.insert("HOME".to_string(), home.display().to_string());
    for (var, sub) in [
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
    ] {
        env.insert(var.to_string(), home.join(sub).display().to_string());
    }
    match cli.profile {
        "claude-code" => {
            // Onboarding done (else it calls api.anthropic.com) and the work dir trusted;
            // "use this API key?" is left to the profile's start-up rules.
            let mut projects = serde_json::Map::new();
            projects.insert(
                work.display().to_string(),
                serde_json::json!({"hasTrustDialogAccepted": true}),
            );
            let cfg = serde_json::json!({"hasCompletedOnboarding": true, "projects": projects});
            std::fs::write(home.join(".claude.json"), cfg.to_string())?;
            env.insert("ANTHROPIC_BASE_URL".into(), base_url.into());
            env.insert("ANTHROPIC_API_KEY".into(), "sk-mock-offline-0000".into());
        }
        "codex" => {
            // The folder trust dialog is left to the profile's start-up rule.
            let dir = home.join(".codex");
            std::fs::create_dir_all(&dir)?;
            let cfg = format!(
                "model = \"mock-model\"\nmodel_provider = \"mock\"\n\n\
                 [model_providers.mock]\nname = \"Mock\"\nbase_url = \"{base_url}/v1\"\n\
                 wire_api = \"responses\"\nenv_key = \"MOCK_API_KEY\"\n"
            );
            std::fs::write(dir.join("config.toml"), cfg)?;
            env.insert("CODEX_HOME".into(), dir.display().to_string());
            env.insert("MOCK_API_KEY".into(), "sk-mock-offline-0000".into());
        }
        "gemini" => {
            // API-key auth; the folder trust dialog is left to the profile's start-up rule.
            let dir = home.join(".gemini");
            std::fs::create_dir_all(&dir)?;
            let cfg = serde_json::json!({"security": {"auth": {"selectedType": "gemini-api-key"}}});
            std::fs::write(dir.join("settings.json"), cfg.to_string())?;
            env.insert("GEMINI_API_KEY".into(), "mock-offline-0000".into());
            env.insert("GOOGLE_GEMINI_BASE_URL".into(), base_url.into());
        }
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no offline set-up for profile {other}"),
            ))
        }
    }
    Ok(env)
}

/// One `[[session]]` table of `sessions.toml` running `cli` from `clis_dir`.
#[must_use]
pub fn session_toml(
    name: &str,
    cli: &Cli,
    clis_dir: &Path,
    work: &Path,
    env: &BTreeMap<String, String>,
    role: &str,
) -> String {
    let mut session = toml::map::Map::new();
    let mut put = |k: &str, v: toml::Value| {
        session.insert(k.to_string(), v);
    };
    put("name", name.into());
    put("profile", cli.profile.into());
    put(
        "command",
        clis_dir.join(cli.binary).display().to_string().into(),
    );
    put(
        "args",
        toml::Value::Array(cli.args.iter().map(|a| (*a).into()).collect()),
    );
    put("cwd", work.display().to_string().into());
    put("role", role.into());
    let env: toml::map::Map<String, toml::Value> = env
        .iter()
        .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
        .collect();
    put("env", toml::Value::Table(env));
    let mut root = toml::map::Map::new();
    root.insert(
        "session".into(),
        toml::Value::Array(vec![toml::Value::Table(session)]),
    );
    toml::to_string(&toml::Value::Table(root)).unwrap_or_default()
}
