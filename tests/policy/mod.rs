//! The command policy: the corpus of command forms (`tests/fixtures/policy/corpus.toml`)
//! against the built-in `config/policy.toml`, in-process; and `architect policy check`,
//! the real binary, for a few cases.

use std::path::{Path, PathBuf};
use std::process::Command;

use architect::policy::{Action, Context, Decision, Policy, Verdict, DEFAULT_PROTECTED_BRANCHES};
use serde::Deserialize;

use crate::helper::{Env, BIN, ONE_SHELL};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    deny: Vec<Case>,
    allow: Vec<Case>,
    escalate: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Case {
    Plain(String),
    Pinned { cmd: String, rule: String },
}

impl Case {
    fn parts(&self) -> (&str, Option<&str>) {
        match self {
            Case::Plain(c) => (c, None),
            Case::Pinned { cmd, rule } => (cmd, Some(rule)),
        }
    }
}

fn corpus() -> Corpus {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy/corpus.toml");
    toml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A scratch home with credentials in it and a worktree `~/work/project`.
struct Scratch {
    _dir: tempfile::TempDir,
    home: PathBuf,
    worktree: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home/agent");
    let worktree = home.join("work/project");
    for d in ["src", "target"] {
        std::fs::create_dir_all(worktree.join(d)).unwrap();
    }
    for (f, text) in [
        ("src/main.rs", "fn main() {}\n"),
        ("Cargo.toml", "[package]\n"),
        ("notes.txt", "notes\n"),
        (".env", "TOKEN=test\n"),
    ] {
        std::fs::write(worktree.join(f), text).unwrap();
    }
    for d in [".ssh", ".aws", ".config/gh", ".docker", ".kube", ".gnupg"] {
        std::fs::create_dir_all(home.join(d)).unwrap();
    }
    for f in [
        ".ssh/id_rsa",
        ".ssh/id_ed25519",
        ".ssh/config",
        ".aws/credentials",
        ".netrc",
    ] {
        std::fs::write(home.join(f), "secret\n").unwrap();
    }
    std::os::unix::fs::symlink(home.join(".ssh"), worktree.join("keys")).unwrap();
    // A nested repository, and a bare repository the agent could have written itself:
    // git run in either reads its config (core.fsmonitor runs a program).
    for d in [
        "sub/.git/hooks",
        "sub/src",
        "evil/objects",
        "evil/refs/heads",
    ] {
        std::fs::create_dir_all(worktree.join(d)).unwrap();
    }
    for (f, text) in [
        ("sub/.git/HEAD", "ref: refs/heads/main\n"),
        ("sub/.git/config", "[core]\n"),
        ("evil/HEAD", "ref: refs/heads/main\n"),
        ("evil/config", "[core]\n\tfsmonitor = touch pwned\n"),
    ] {
        std::fs::write(worktree.join(f), text).unwrap();
    }
    Scratch {
        _dir: dir,
        home,
        worktree,
    }
}

impl Scratch {
    fn ctx(&self) -> Context {
        Context {
            worktree: self.worktree.clone(),
            home: self.home.clone(),
            protected_branches: DEFAULT_PROTECTED_BRANCHES.map(String::from).to_vec(),
            profile: None,
        }
    }
}

#[test]
fn corpus_cases_get_their_decisions() {
    let c = corpus();
    let s = scratch();
    let policy = Policy::builtin();
    let ctx = s.ctx();
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for (want, cases) in [
        (Decision::Deny, &c.deny),
        (Decision::Allow, &c.allow),
        (Decision::Escalate, &c.escalate),
    ] {
        counts.push((want, cases.len()));
        for case in cases {
            let (cmd, rule) = case.parts();
            let v = policy.check(&Action::Command(cmd.to_string()), &ctx);
            let rule_ok = rule.is_none_or(|r| r == v.rule);
            if v.decision != want || !rule_ok {
                failures.push(format!(
                    "  {cmd:?}\n      want {want}{}\n      got  {} ({}: {})",
                    rule.map(|r| format!(" ({r})")).unwrap_or_default(),
                    v.decision,
                    v.rule,
                    v.reason
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the corpus cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        c.deny.len() >= 50,
        "the corpus keeps at least 50 dangerous forms"
    );
    eprintln!("policy corpus: {counts:?}");
}

#[test]
fn every_verdict_names_a_rule_and_a_reason() {
    let c = corpus();
    let s = scratch();
    let policy = Policy::builtin();
    for case in c.deny.iter().chain(&c.allow).chain(&c.escalate) {
        let (cmd, _) = case.parts();
        let v = policy.check(&Action::Command(cmd.to_string()), &s.ctx());
        let prefix = format!("{}.", v.decision);
        assert!(
            v.rule
                .split(", ")
                .all(|r| r.starts_with(&prefix) && r.len() > prefix.len()),
            "{cmd:?}: {v:?}"
        );
        assert!(!v.reason.trim().is_empty(), "{cmd:?}: {v:?}");
    }
}

#[test]
fn the_file_in_config_is_the_builtin_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = std::fs::read_to_string(dir.join("policy.toml")).unwrap();
    assert_eq!(text, architect::policy::DEFAULT_POLICY);
    Policy::load(&dir).unwrap();
}

fn check(env: &Env, worktree: &Path, args: &[&str]) -> (Verdict, std::process::Output) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&env.config)
        .args(["policy", "check", "--json", "--worktree"])
        .arg(worktree)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "architect policy check {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Verdict = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (v, out)
}

#[test]
fn the_binary_prints_decisions_and_exits_zero_for_all_three() {
    let env = Env::new(ONE_SHELL);
    let s = scratch();
    let wt = &s.worktree;
    for (args, decision, rule) in [
        (&["--", "sudo rm -rf /"][..], Decision::Deny, "deny.sudo"),
        (
            &["--", "git", "push", "--force"][..],
            Decision::Deny,
            "deny.git-force-push",
        ),
        (
            &["--", "cargo test && git status"][..],
            Decision::Allow,
            "allow.build-tools, allow.git-local",
        ),
        (
            &["--", "npm install left-pad"][..],
            Decision::Escalate,
            "escalate.not-allowed",
        ),
        (
            &["--kind", "edit", "--", "src/main.rs"][..],
            Decision::Allow,
            "allow.edit-inside-worktree",
        ),
        (
            &["--kind", "edit", "--", "/etc/passwd"][..],
            Decision::Deny,
            "deny.write-outside-worktree",
        ),
        (
            &["--kind", "read", "--", "keys/id_rsa"][..],
            Decision::Deny,
            "deny.credential-read",
        ),
        (
            &["--kind", "fetch", "--", "https://example.com/"][..],
            Decision::Escalate,
            "escalate.fetch",
        ),
        (
            &["--kind", "tool", "--", "TodoWrite", "{}"][..],
            Decision::Allow,
            "allow.plans",
        ),
        (
            &["--protected", "release", "--", "git push origin main"][..],
            Decision::Escalate,
            "escalate.not-allowed",
        ),
        (
            &["--protected", "release", "--", "git push origin release"][..],
            Decision::Deny,
            "deny.git-push-protected",
        ),
    ] {
        let (v, _) = check(&env, wt, args);
        assert_eq!(
            (v.decision, v.rule.as_str()),
            (decision, rule),
            "{args:?}: {v:?}"
        );
    }

    // Text output: the decision, then the rule and its reason.
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&env.config)
        .args(["policy", "check", "--worktree"])
        .arg(wt)
        .args(["--", "sudo ls"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "deny  (rule deny.sudo: sudo runs commands as root)\n"
    );
}

/// The forms an audit found allowed (each ran an injected command on bash 5.2.15 / git),
/// through the real binary: none is allowed now.
#[test]
fn the_binary_refuses_the_audited_code_running_forms() {
    let env = Env::new(ONE_SHELL);
    let s = scratch();
    let wt = &s.worktree;
    let cases: &[(&[&str], Decision, &str)] = &[
        // Another repository's config (core.fsmonitor in the agent-written evil/config).
        (
            &["--", "git --git-dir=evil status"],
            Decision::Escalate,
            "escalate.git-other-repo",
        ),
        (
            &["--", "git --git-dir=./evil --work-tree=. status"],
            Decision::Escalate,
            "escalate.git-other-repo",
        ),
        (
            &["--", "git -C evil log"],
            Decision::Escalate,
            "escalate.git-other-repo",
        ),
        (
            &["--", "cd evil && git status"],
            Decision::Escalate,
            "escalate.git-other-repo",
        ),
        (
            &["--", "echo '[core]' > sub/.git/config"],
            Decision::Deny,
            "deny.write-git-dir",
        ),
        (
            &["--kind", "edit", "--", "sub/.git/config"],
            Decision::Deny,
            "deny.write-git-dir",
        ),
        (
            &["--kind", "edit", "--", "evil/config"],
            Decision::Deny,
            "deny.write-git-dir",
        ),
        // Array subscripts are evaluated.
        (
            &["--", "[[ 'a[$(cmd)]' -eq 0 ]]"],
            Decision::Escalate,
            "escalate.arithmetic",
        ),
        (
            &["--", "test -v 'a[$(cmd)]'"],
            Decision::Escalate,
            "escalate.arithmetic",
        ),
        (
            &["--", "[ -v 'a[$(cmd)]' ]"],
            Decision::Escalate,
            "escalate.arithmetic",
        ),
        (
            &["--", "printf -v 'a[$(cmd)]' x"],
            Decision::Escalate,
            "escalate.arithmetic",
        ),
        // Protected variables, by printf -v.
        (
            &["--", "printf -v PATH /tmp/evil"],
            Decision::Deny,
            "deny.env-exec",
        ),
        (
            &["--", "printf -v PROMPT_COMMAND 'touch pwned'"],
            Decision::Deny,
            "deny.env-exec",
        ),
        // The host a client contacts.
        (
            &["--kind", "fetch", "--", r"https://evil.com\@docs.rs/"],
            Decision::Escalate,
            "escalate.fetch",
        ),
        // date that sets the clock or reads a file.
        (
            &["--", "date -s 2030-01-01"],
            Decision::Escalate,
            "escalate.not-allowed",
        ),
        (
            &["--", "date -f /etc/passwd"],
            Decision::Escalate,
            "escalate.not-allowed",
        ),
        // Destroying protected branches or recovery data locally.
        (
            &["--", "git branch -D main"],
            Decision::Deny,
            "deny.git-destructive",
        ),
        (
            &["--", "git branch -f main HEAD~3"],
            Decision::Deny,
            "deny.git-destructive",
        ),
        (
            &["--", "git checkout -f main"],
            Decision::Deny,
            "deny.git-destructive",
        ),
        (
            &["--", "git reflog expire --expire=now --all"],
            Decision::Deny,
            "deny.git-destructive",
        ),
        (
            &["--", "git stash clear"],
            Decision::Escalate,
            "escalate.git-destructive",
        ),
        // Tool configs that run programs.
        (
            &["--kind", "edit", "--", ".cargo/config.toml"],
            Decision::Escalate,
            "escalate.code-config",
        ),
        (
            &["--", "echo x > .npmrc"],
            Decision::Escalate,
            "escalate.code-config",
        ),
    ];
    for (args, decision, rule) in cases {
        let (v, _) = check(&env, wt, args);
        assert_eq!(
            (v.decision, v.rule.as_str()),
            (*decision, *rule),
            "{args:?}: {v:?}"
        );
    }
    // The session's own repository still works from a subdirectory.
    let (v, _) = check(&env, wt, &["--", "cd src && git status"]);
    assert_eq!(v.decision, Decision::Allow, "{v:?}");
}

#[test]
fn the_binary_uses_the_config_dirs_policy_and_profiles() {
    let env = Env::new(ONE_SHELL);
    let s = scratch();
    std::fs::write(
        env.config.join("policy.toml"),
        "[[allow]]\nname = \"codex-push\"\nprograms = [\"git\"]\nsubcommands = [\"push\"]\nprofiles = [\"codex\"]\n",
    )
    .unwrap();
    let push = ["--", "git push origin feature/x"];
    let (v, _) = check(&env, &s.worktree, &push);
    assert_eq!(v.decision, Decision::Escalate, "{v:?}");
    let (v, _) = check(
        &env,
        &s.worktree,
        &[&["--profile", "codex"][..], &push].concat(),
    );
    assert_eq!(
        (v.decision, v.rule.as_str()),
        (Decision::Allow, "allow.codex-push")
    );

    // A broken policy file is an error naming the file, exit status 1.
    std::fs::write(env.config.join("policy.toml"), "[[allow]]\nnme = \"x\"\n").unwrap();
    let out = env.cli(&["policy", "check", "--", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.toml") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn init_writes_the_policy_file() {
    let fresh = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(fresh.path())
        .arg("init")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(fresh.path().join("config/policy.toml")).unwrap();
    assert_eq!(text, architect::policy::DEFAULT_POLICY);
}

/// Single-quotes `s` for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn corpus_cases_keep_their_decisions_inside_compound_commands() {
    let c = corpus();
    let s = scratch();
    let policy = Policy::builtin();
    let ctx = s.ctx();
    let decide = |cmd: &str| policy.check(&Action::Command(cmd.to_string()), &ctx);
    let mut failures = Vec::new();
    let mut expect = |cmd: String, want: Decision| {
        let v = decide(&cmd);
        if v.decision != want {
            failures.push(format!(
                "  {cmd:?}\n      want {want}, got {} ({}: {})",
                v.decision, v.rule, v.reason
            ));
        }
    };
    for case in &c.deny {
        let (d, _) = case.parts();
        for wrapped in [
            format!("true && {d}"),
            format!("{d}\ntrue"),
            format!("ls | {d}"),
            format!("bash -c {}", quote(d)),
            format!("sh -c {}", quote(&format!("true && {d}"))),
            format!("echo $( {d} )"),
            format!("( {d} )"),
            format!("if true; then {d}\nfi"),
        ] {
            expect(wrapped, Decision::Deny);
        }
    }
    for case in &c.allow {
        let (a, _) = case.parts();
        expect(format!("{a} && git status"), Decision::Allow);
        expect(format!("bash -c {}", quote(a)), Decision::Allow);
        // Opaque wrappers are never allowed.
        expect(format!("eval {}", quote(a)), Decision::Escalate);
        expect(format!("{a}\nnpm install x"), Decision::Escalate);
        if !a.contains('#') {
            // (A comment inside `$(…)` would swallow the closing parenthesis.)
            expect(format!("echo $( {a} )"), Decision::Escalate);
        }
    }
    for case in &c.escalate {
        let (e, _) = case.parts();
        if e.is_empty() {
            continue;
        }
        expect(format!("ls && {e}"), Decision::Escalate);
        expect(format!("{e}\nsudo ls"), Decision::Deny);
    }
    assert!(
        failures.is_empty(),
        "{} compound forms failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
