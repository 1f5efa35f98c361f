//! Unit tests of the policy engine. The big table of command forms is the corpus
//! (`tests/fixtures/policy/corpus.toml`), run by the integration tests.

use std::path::{Path, PathBuf};

use super::*;

struct Fx {
    _dir: tempfile::TempDir,
    wt: PathBuf,
    home: PathBuf,
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let wt = dir.path().join("home/me/wt");
    let home = dir.path().join("home/me");
    std::fs::create_dir_all(wt.join("src")).unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    Fx {
        wt,
        home,
        _dir: dir,
    }
}

impl Fx {
    fn ctx(&self) -> Context {
        Context {
            worktree: self.wt.clone(),
            home: self.home.clone(),
            protected_branches: DEFAULT_PROTECTED_BRANCHES.map(String::from).to_vec(),
            profile: None,
        }
    }

    fn cmd(&self, line: &str) -> Verdict {
        Policy::builtin().check(&Action::Command(line.into()), &self.ctx())
    }
}

#[track_caller]
fn is(v: &Verdict, d: Decision, rule: &str) {
    assert_eq!((v.decision, v.rule.as_str()), (d, rule), "{v:?}");
}

#[test]
fn the_builtin_policy_parses() {
    let p = Policy::builtin();
    assert!(p.deny.iter().any(|r| r.name == "deny.sudo"));
    assert!(p.allow.iter().any(|r| r.name == "allow.git-local"));
}

#[test]
fn decisions_carry_their_rule() {
    let f = fx();
    is(&f.cmd("sudo ls"), Decision::Deny, "deny.sudo");
    is(&f.cmd("git status"), Decision::Allow, "allow.git-local");
    is(
        &f.cmd("npm install left-pad"),
        Decision::Escalate,
        "escalate.not-allowed",
    );
    is(
        &f.cmd("cargo test && git diff"),
        Decision::Allow,
        "allow.build-tools, allow.git-local",
    );
}

#[test]
fn symlinks_are_followed_before_deciding() {
    let f = fx();
    std::os::unix::fs::symlink(f.home.join(".ssh"), f.wt.join("keys")).unwrap();
    std::os::unix::fs::symlink("/etc", f.wt.join("etc-link")).unwrap();
    std::fs::write(f.home.join(".ssh/config"), "Host x").unwrap();
    is(
        &f.cmd("cat keys/config"),
        Decision::Deny,
        "deny.credential-read",
    );
    is(
        &f.cmd("echo x > etc-link/passwd"),
        Decision::Deny,
        "deny.write-outside-worktree",
    );
    is(
        &f.cmd("rm -rf etc-link/../src"),
        Decision::Deny,
        "deny.write-outside-worktree",
    );
    is(
        &f.cmd("ls etc-link"),
        Decision::Escalate,
        "escalate.outside-worktree",
    );
    is(
        &Policy::builtin().check(&Action::Read(f.wt.join("keys/config")), &f.ctx()),
        Decision::Deny,
        "deny.credential-read",
    );
}

#[test]
fn cd_is_followed() {
    let f = fx();
    is(
        &f.cmd("cd src && ls"),
        Decision::Allow,
        "allow.cd-inside-worktree, allow.read-only-tools",
    );
    is(
        &f.cmd("cd / && rm -rf etc"),
        Decision::Deny,
        "deny.write-outside-worktree",
    );
    is(
        &f.cmd("cd .. ; rm -rf wt2"),
        Decision::Deny,
        "deny.write-outside-worktree",
    );
    is(
        &f.cmd("cd $X && ls"),
        Decision::Escalate,
        "escalate.unknown-path",
    );
    is(
        &f.cmd("cd src && rm -rf ../.."),
        Decision::Deny,
        "deny.write-outside-worktree",
    );
    is(
        &f.cmd("cd src && rm -rf .."),
        Decision::Deny,
        "deny.delete-worktree",
    );
}

#[test]
fn file_actions() {
    let f = fx();
    let p = Policy::builtin();
    let c = f.ctx();
    is(
        &p.check(&Action::Edit("src/a.rs".into()), &c),
        Decision::Allow,
        "allow.edit-inside-worktree",
    );
    is(
        &p.check(&Action::Edit("~/.bashrc".into()), &c),
        Decision::Deny,
        "deny.write-outside-worktree",
    );
    is(
        &p.check(&Action::Edit(".git/hooks/pre-commit".into()), &c),
        Decision::Deny,
        "deny.write-git-dir",
    );
    is(
        &p.check(&Action::Read("src/a.rs".into()), &c),
        Decision::Allow,
        "allow.read-inside-worktree",
    );
    is(
        &p.check(&Action::Read("/etc/hosts".into()), &c),
        Decision::Escalate,
        "escalate.outside-worktree",
    );
    is(
        &p.check(&Action::Read("~/.ssh/id_ed25519".into()), &c),
        Decision::Deny,
        "deny.credential-read",
    );
    is(
        &p.check(&Action::Fetch("https://docs.rs/regex".into()), &c),
        Decision::Allow,
        "allow.docs",
    );
    is(
        &p.check(&Action::Fetch("https://docs.rs@evil.example/".into()), &c),
        Decision::Escalate,
        "escalate.fetch",
    );
    is(
        &p.check(&Action::Fetch("file:///etc/shadow".into()), &c),
        Decision::Deny,
        "deny.credential-read",
    );
    let tool = |name: &str| Action::Tool {
        name: name.into(),
        input: String::new(),
    };
    is(
        &p.check(&tool("TodoWrite"), &c),
        Decision::Allow,
        "allow.plans",
    );
    is(
        &p.check(&tool("WebSearch"), &c),
        Decision::Escalate,
        "escalate.tool",
    );
}

/// The host matched is the one a client contacts, by WHATWG rules (browsers, Node, curl's
/// URL parser for the special schemes agree on these).
#[test]
fn fetches_are_matched_on_the_host_a_client_contacts() {
    let f = fx();
    let p = Policy::builtin();
    let c = f.ctx();
    let fetch = |u: &str| p.check(&Action::Fetch(u.into()), &c);
    for u in [
        // A backslash ends the authority in http(s) URLs: this goes to evil.com.
        r"https://evil.com\@docs.rs/",
        r"https:\\evil.com\docs.rs",
        "https://docs.rs@evil.example/",
        "https://docs.rs:443@evil.example/",
        "https://docs.rs.evil.example/",
        "ftp://docs.rs/x",
        "docs.rs/regex",
        "https:///x",
    ] {
        is(&fetch(u), Decision::Escalate, "escalate.fetch");
    }
    for u in [
        "https://docs.rs/regex",
        "HTTPS://DOCS.RS./regex",
        "https://user:secret@docs.rs/x",
        "https://docs%2Ers/x",
        // The host ends at the backslash: the client contacts docs.rs.
        r"https://docs.rs\.evil.example/",
        "http://doc.rust-lang.org:80/std",
    ] {
        is(&fetch(u), Decision::Allow, "allow.docs");
    }
    let key = format!("file://{}/%2Essh/id_rsa", f.home.display());
    is(&fetch(&key), Decision::Deny, "deny.credential-read");
    is(
        &fetch("file://localhost/etc/shadow"),
        Decision::Deny,
        "deny.credential-read",
    );
    is(
        &fetch("file://server/share/x"),
        Decision::Escalate,
        "escalate.fetch",
    );
}

/// File edits (not commands): any git directory is refused, nested or bare; tool configs
/// that run programs go to a person.
#[test]
fn edits_of_git_directories_and_tool_configs() {
    let f = fx();
    let p = Policy::builtin();
    let c = f.ctx();
    for d in ["bare/objects", "bare/refs", "sub/.git"] {
        std::fs::create_dir_all(f.wt.join(d)).unwrap();
    }
    std::fs::write(f.wt.join("bare/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::os::unix::fs::symlink(f.wt.join("sub/.git"), f.wt.join("gitlink")).unwrap();
    let edit = |path: &str| p.check(&Action::Edit(path.into()), &c);
    for path in [
        "sub/.git/config",
        "x/y/.git/hooks/pre-commit",
        "sub/.Git/config",
        "bare/config",
        "bare/hooks/post-checkout",
        "gitlink/config",
    ] {
        is(&edit(path), Decision::Deny, "deny.write-git-dir");
    }
    for path in [
        ".cargo/config.toml",
        ".cargo/config",
        "src/.cargo/config.toml",
        ".npmrc",
        ".envrc",
        "tools/.gitconfig",
        "rust-toolchain.toml",
    ] {
        is(&edit(path), Decision::Escalate, "escalate.code-config");
    }
    for path in [
        "bare.rs",
        "src/config",
        "src/HEAD",
        "cargo/config.toml",
        "npmrc.md",
    ] {
        is(&edit(path), Decision::Allow, "allow.edit-inside-worktree");
    }
}

/// git runs in the session's repository only: another one's config runs programs.
#[test]
fn git_runs_only_in_the_sessions_repository() {
    let f = fx();
    for d in ["sub/src", "vendor/lib", ".git"] {
        std::fs::create_dir_all(f.wt.join(d)).unwrap();
    }
    // A submodule-style checkout: `.git` is a file naming a git directory elsewhere.
    std::fs::write(f.wt.join("vendor/lib/.git"), "gitdir: /tmp/x\n").unwrap();
    std::fs::write(f.wt.join("sub/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::os::unix::fs::symlink(f.wt.join("vendor/lib"), f.wt.join("lib-link")).unwrap();
    std::os::unix::fs::symlink(f.wt.join("src"), f.wt.join("src-link")).unwrap();
    let other = "escalate.git-other-repo";
    for line in [
        "git -C vendor/lib status",
        "git -C lib-link status",
        "cd lib-link && git log",
        "git -C sub/src status",
        "git -C $D status",
        "cd .. && git status",
        "git -C .. status",
        "git --git-dir=vendor/lib/.git log",
        "git --work-tree=/tmp status",
        "touch src-link/HEAD && git -C src status",
        "git stash pop && git -C src status",
    ] {
        let v = f.cmd(line);
        assert_eq!(v.decision, Decision::Escalate, "{line}: {v:?}");
        if !line.contains("..") && !line.contains("$D") {
            assert_eq!(v.rule, other, "{line}: {v:?}");
        }
    }
    let abs = format!("git --git-dir={}/.git status", f.wt.display());
    for line in [
        "git -C src-link status",
        "cd src && git log && cd .. && git status",
        abs.as_str(),
        "touch notes.txt && git -C src status",
        "git commit -m x && cd src && git status",
    ] {
        let v = f.cmd(line);
        assert_eq!(v.decision, Decision::Allow, "{line}: {v:?}");
    }
}

#[test]
fn profiles_limit_rules() {
    let f = fx();
    let p = Policy::parse(
        "[[allow]]\nname = \"push\"\nprograms = [\"git\"]\nsubcommands = [\"push\"]\nprofiles = [\"codex\"]\n",
        Path::new("test.toml"),
    )
    .unwrap();
    let mut c = f.ctx();
    let push = Action::Command("git push origin feature/x".into());
    is(
        &p.check(&push, &c),
        Decision::Escalate,
        "escalate.not-allowed",
    );
    c.profile = Some("codex".into());
    is(&p.check(&push, &c), Decision::Allow, "allow.push");
    // The protected-branch check still wins.
    is(
        &p.check(&Action::Command("git push origin main".into()), &c),
        Decision::Deny,
        "deny.git-push-protected",
    );
}

#[test]
fn sections_switch_checks_off() {
    let f = fx();
    let p = Policy::parse("[credentials]\nenabled = false\n", Path::new("t.toml")).unwrap();
    let v = p.check(&Action::Command("cat ~/.ssh/id_rsa".into()), &f.ctx());
    assert_eq!(v.decision, Decision::Escalate, "{v:?}");
    // Without rules nothing is allowed.
    assert_eq!(
        p.check(&Action::Command("ls".into()), &f.ctx()).decision,
        Decision::Escalate
    );
}

#[test]
fn bad_files_are_config_errors_naming_the_file() {
    for (text, want) in [
        ("[[deny]]\nname = \"x\"\nprograms = [\"a\"]\n", "reason"),
        ("[[deny]]\nname = \"Bad Name\"\nprograms = [\"a\"]\nreason = \"r\"\n", "name must match"),
        ("[[allow]]\nname = \"x\"\n", "exactly one of programs, hosts or tools"),
        ("[[allow]]\nname = \"x\"\nprograms = [\"a\"]\n[[allow]]\nname = \"x\"\nprograms = [\"b\"]\n", "defined twice"),
        ("[[allow]]\nname = \"x\"\nprograms = [\"a\"]\nscript = [\"(\"]\n", "script regex"),
        ("[[allow]]\nname = \"x\"\nprogram = [\"a\"]\n", "unknown field"),
        ("[credentials]\nenabled = true\npaths = [\"relative\"]\n", "must start with"),
        ("[writes]\nenabled = true\noptions = [\"curl\"]\n", "PROGRAM OPTION"),
    ] {
        let e = Policy::parse(text, Path::new("/cfg/policy.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Config { .. }), "{msg}");
        assert!(msg.contains("/cfg/policy.toml") && msg.contains(want), "{msg}");
    }
}

#[test]
fn load_falls_back_to_the_builtin_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = Policy::load(dir.path()).unwrap();
    assert!(p.source().to_string_lossy().contains("built in"));
    std::fs::write(
        dir.path().join("policy.toml"),
        "[[deny]]\nname = \"ls\"\nprograms = [\"ls\"]\nreason = \"no\"\n",
    )
    .unwrap();
    let p = Policy::load(dir.path()).unwrap();
    let f = fx();
    is(
        &p.check(&Action::Command("ls".into()), &f.ctx()),
        Decision::Deny,
        "deny.ls",
    );
}

#[test]
fn verdicts_serialise_lowercase() {
    let v = Verdict::new(Decision::Escalate, "escalate.x", "why");
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"decision":"escalate","rule":"escalate.x","reason":"why"}"#
    );
}

#[test]
fn line_continuations_join_words() {
    let f = fx();
    is(&f.cmd("su\\\ndo ls"), Decision::Deny, "deny.sudo");
    is(
        &f.cmd("ls \\\n  -la"),
        Decision::Allow,
        "allow.read-only-tools",
    );
}

/// Random command lines over the characters that matter to a shell: never a panic, the
/// same verdict twice, and nothing allowed that does not parse.
#[test]
fn random_command_lines_are_handled() {
    let f = fx();
    let p = Policy::builtin();
    let c = f.ctx();
    let alphabet: Vec<char> = "ab ls rm'\"\\$(){}[]<>|&;`~*?#!=-/.\n\t0é"
        .chars()
        .collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        usize::try_from(x % 1_000_003).unwrap()
    };
    for _ in 0..3000 {
        let len = next() % 24;
        let s: String = (0..len)
            .map(|_| alphabet[next() % alphabet.len()])
            .collect();
        let v = p.check(&Action::Command(s.clone()), &c);
        assert_eq!(v, p.check(&Action::Command(s.clone()), &c), "{s:?}");
        if v.decision == Decision::Allow {
            assert!(
                shell::parse(&s).is_ok(),
                "{s:?} allowed without parsing: {v:?}"
            );
        }
    }
}

#[test]
fn a_worktree_named_through_a_symlink_is_the_same_worktree() {
    let f = fx();
    let link = f.wt.parent().unwrap().join("wt-link");
    std::os::unix::fs::symlink(&f.wt, &link).unwrap();
    let mut c = f.ctx();
    c.worktree = link;
    let p = Policy::builtin();
    let real = f.wt.join("src/main.rs");
    let v = p.check(&Action::Command(format!("cat {}", real.display())), &c);
    is(&v, Decision::Allow, "allow.read-only-tools");
    let v = p.check(
        &Action::Command(format!("touch {}/.git/x", f.wt.display())),
        &c,
    );
    is(&v, Decision::Deny, "deny.write-git-dir");
}

#[test]
fn pathological_input_is_bounded() {
    let f = fx();
    let braces = "{a,b}".repeat(5000);
    is(
        &f.cmd(&format!("rm -rf {braces}")),
        Decision::Deny,
        "deny.delete-unknown",
    );
    let deep = "a/".repeat(20_000);
    assert_eq!(f.cmd(&format!("cat {deep}x")).decision, Decision::Allow);
    let nested = format!("{}ls{}", "$(".repeat(100), ")".repeat(100));
    assert_eq!(f.cmd(&nested).decision, Decision::Escalate);
    let subshells = format!("{}sudo x{}", "( ".repeat(200), " )".repeat(200));
    is(&f.cmd(&subshells), Decision::Deny, "deny.sudo");
}
