//! Parser tests.

use super::*;

fn words(c: &Command) -> Vec<String> {
    match c {
        Command::Simple(s) => s
            .words
            .iter()
            .map(|w| w.literal().unwrap_or_else(|| "<?>".into()))
            .collect(),
        _ => vec!["<compound>".into()],
    }
}

fn simple_commands(src: &str) -> Vec<Vec<String>> {
    let script = parse(src).unwrap();
    let mut out = Vec::new();
    for ao in &script {
        for p in std::iter::once(&ao.first).chain(ao.rest.iter().map(|(_, p)| p)) {
            for c in &p.commands {
                out.push(words(c));
            }
        }
    }
    out
}

#[test]
fn quotes_and_escapes_are_removed() {
    assert_eq!(
        simple_commands(r#"s'u'do "x y" \l\s $'\x73udo'"#),
        vec![vec!["sudo", "x y", "ls", "sudo"]]
    );
    assert_eq!(
        simple_commands("echo 'a\"b' \"c'd\" e\\ f"),
        vec![vec!["echo", "a\"b", "c'd", "e f"]]
    );
    assert_eq!(simple_commands("echo \"\""), vec![vec!["echo", ""]]);
}

#[test]
fn lists_and_pipelines_split() {
    assert_eq!(
        simple_commands("ls; sudo x && rm -rf / || echo hi | sh & true\nfalse"),
        vec![
            vec!["ls"],
            vec!["sudo", "x"],
            vec!["rm", "-rf", "/"],
            vec!["echo", "hi"],
            vec!["sh"],
            vec!["true"],
            vec!["false"],
        ]
    );
    assert_eq!(simple_commands("ls # ; sudo x"), vec![vec!["ls"]]);
    assert_eq!(simple_commands("echo a#b"), vec![vec!["echo", "a#b"]]);
}

#[test]
fn redirections_are_parsed() {
    let s = parse("echo x 2>&1 >/etc/passwd 2>> log <in").unwrap();
    let Command::Simple(c) = &s[0].first.commands[0] else {
        panic!()
    };
    let ops: Vec<_> = c
        .redirects
        .iter()
        .map(|r| (r.fd, r.op, r.target.literal().unwrap()))
        .collect();
    assert_eq!(
        ops,
        vec![
            (Some(2), RedirOp::DupOut, "1".into()),
            (None, RedirOp::Write, "/etc/passwd".into()),
            (Some(2), RedirOp::Append, "log".into()),
            (None, RedirOp::Read, "in".into()),
        ]
    );
}

#[test]
fn substitutions_are_parsed_recursively() {
    let s = parse("echo $(sudo x `rm -rf /`) <(curl y)").unwrap();
    let Command::Simple(c) = &s[0].first.commands[0] else {
        panic!()
    };
    let Part::CommandSub(sub) = &c.words[1].parts[0] else {
        panic!()
    };
    assert_eq!(sub.source, "sudo x `rm -rf /`");
    assert!(sub.script.is_ok());
    assert!(matches!(c.words[2].parts[0], Part::ProcessSub(_)));
}

#[test]
fn compounds_and_functions() {
    let s = parse(":(){ :|:& };:").unwrap();
    assert!(matches!(s[0].first.commands[0], Command::Function { ref name, .. } if name == ":"));
    assert!(parse("if true; then ls; elif x; then y; else z; fi > out").is_ok());
    assert!(parse("for f in a b; do echo $f; done").is_ok());
    assert!(parse("while true; do :; done").is_ok());
    assert!(parse("{ ls; } && ( cd x && ls )").is_ok());
    assert!(parse("[[ -f x && -d y ]] && ls").is_ok());
}

#[test]
fn heredoc_bodies_are_not_commands() {
    let s = parse("cat <<EOF > notes.txt\nsudo rm -rf /\nEOF\nls").unwrap();
    assert_eq!(s.len(), 2);
    let Command::Simple(c) = &s[0].first.commands[0] else {
        panic!()
    };
    assert_eq!(
        c.redirects[0]
            .heredoc
            .as_ref()
            .unwrap()
            .body
            .borrow()
            .as_str(),
        "sudo rm -rf /\n"
    );
}

#[test]
fn unsupported_constructs_are_errors() {
    for src in [
        "case x in a) ls;; esac",
        "echo 'x",
        "echo \"x",
        "a=(1 2)",
        "((x++))",
        "echo `x",
        "ls )",
        "echo $(ls",
        "f() (",
        "@(x)",
    ] {
        assert!(parse(src).is_err(), "{src} should not parse");
    }
}

#[test]
fn assignments_only_before_the_program() {
    let s = parse("FOO=1 BAR+=x env A=b cmd").unwrap();
    let Command::Simple(c) = &s[0].first.commands[0] else {
        panic!()
    };
    assert_eq!(c.assigns.len(), 2);
    assert_eq!(c.words.len(), 3);
}

#[test]
fn array_element_assignments_keep_their_subscript() {
    let one = |src: &str| {
        let s = parse(src).unwrap();
        let Command::Simple(c) = &s[0].first.commands[0] else {
            panic!()
        };
        c.clone()
    };
    let c = one("a[0]=x b[i+1]+='y z' cmd");
    assert_eq!(c.words.len(), 1);
    let got: Vec<_> = c
        .assigns
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                a.subscript.as_ref().and_then(Word::literal),
                a.value.literal(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a".into(), Some("0".into()), Some("x".into())),
            ("b".into(), Some("i+1".into()), Some("y z".into())),
        ]
    );
    // A substitution in the subscript is kept for the policy to look into.
    let c = one("a[$(id)]=1");
    let sub = c.assigns[0].subscript.as_ref().unwrap();
    assert!(sub.parts.iter().any(|p| matches!(p, Part::CommandSub(_))));
    // Nested brackets; and words that only look like it are commands.
    assert_eq!(one("a[b[1]]=2").assigns.len(), 1);
    for src in ["a[0]x=1", "a[0", "1a[0]=x", "'a'[0]=x"] {
        assert!(one(src).assigns.is_empty(), "{src}");
    }
}
