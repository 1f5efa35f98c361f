//! Extraction: a task's output goes through the patterns of `config/extract.toml`, and
//! what they find is in the log, in `architect show` and in the `extractions` view.

use std::time::Duration;

use architect::log::event::{Extraction, TaskCompleted};
use architect::spool::task::TaskState;

use crate::helper::{Env, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

/// What the task prints: a cargo test run that failed and a Python traceback, between
/// ordinary lines. It is printed from a file, so that the command line echoed by the
/// shell holds none of it.
const OUTPUT: &str = "\
   Compiling app v0.1.0 (/work/app)
running 2 tests
test parse::empty ... FAILED
test parse::one ... ok
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s
now the Python side
Traceback (most recent call last):
  File \"/app/main.py\", line 12, in <module>
ValueError: invalid literal for int() with base 10: 'x'
done
";

#[test]
fn a_finished_tasks_errors_and_test_results_are_in_show_and_in_sql() {
    let env = Env::new(ONE_SHELL);
    let out = env.dir.path().join("out.txt");
    std::fs::write(&out, OUTPUT).unwrap();
    let _d = env.daemon();
    env.drop_task(
        "x.json",
        &serde_json::json!({"id": "x", "prompt": format!("cat {}", out.display())}).to_string(),
    );
    let (state, rec) = env.wait_final("x", T);
    assert_eq!(state, TaskState::Done);
    assert!(rec.result.unwrap().output.contains("test result: FAILED"));

    // `show --json`: every match, with its line in the output and its fields.
    let shown: serde_json::Value = serde_json::from_str(&env.ok(&["show", "x", "--json"])).unwrap();
    let found: Vec<(String, u64)> = shown["extractions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["pattern"].as_str().unwrap().to_string(),
                e["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "cargo-test-failed",
            "cargo-test-result",
            "python-traceback",
            "python-frame",
            "exception"
        ],
        "{shown:#}"
    );
    // Lines count from the output's first line, as the record's `output` has it.
    let output_lines: Vec<String> = shown["result"]["output"]
        .as_str()
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    for (pattern, line) in &found {
        let text = &output_lines[usize::try_from(*line).unwrap() - 1];
        let e = shown["extractions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["pattern"] == pattern.as_str())
            .unwrap();
        assert_eq!(e["text"], text.as_str(), "{pattern}");
        assert_eq!(e["attempt"], 1);
    }
    let result = shown["extractions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pattern"] == "cargo-test-result")
        .unwrap();
    assert_eq!(result["category"], "test");
    assert_eq!(result["fields"]["passed"], "1");
    assert_eq!(result["fields"]["failed"], "1");
    assert_eq!(result["fields"]["status"], "FAILED");

    // The text form lists them too.
    let text = env.ok(&["show", "x"]);
    assert!(text.contains("--- extractions (5) ---"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("python-frame")
            && l.contains("file=/app/main.py function=<module> line=12")),
        "{text}"
    );

    // SQL: the extractions view.
    let rows: serde_json::Value = serde_json::from_str(&env.ok(&[
        "sql",
        "SELECT pattern, category, severity, fields->>'kind' AS kind, session \
         FROM extractions WHERE task_id = 'x' AND category = 'error' ORDER BY line",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        rows,
        serde_json::json!([
            {"pattern": "python-traceback", "category": "error", "severity": "error", "kind": null, "session": "sh-1"},
            {"pattern": "exception", "category": "error", "severity": "error", "kind": "ValueError", "session": "sh-1"},
        ])
    );

    // Logged before the task's completion, so a reader that sees the task done sees them.
    let done_at = env.events_of::<TaskCompleted>()[0].ts;
    let extractions = env.events_of::<Extraction>();
    assert_eq!(extractions.len(), 5);
    assert!(extractions.iter().all(|e| e.ts <= done_at));
}

#[test]
fn an_attempt_logs_at_most_two_hundred_extractions_and_counts_the_rest() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.drop_task(
        "many.json",
        r#"{"id": "many", "prompt": "for i in $(seq 1 230); do echo \"panic: number $i\"; done"}"#,
    );
    assert_eq!(env.wait_final("many", T).0, TaskState::Done);
    let logged = env.events_of::<Extraction>();
    assert_eq!(logged.len(), 200);
    assert_eq!(logged[0].data.fields["message"], "number 1");
    assert_eq!(logged[199].data.fields["message"], "number 200");
    assert_eq!(logged[199].data.dropped, 30);
    assert!(logged[..199].iter().all(|e| e.data.dropped == 0));
    let rows: serde_json::Value = serde_json::from_str(&env.ok(&[
        "sql",
        "SELECT count(*) AS n, sum(dropped) AS dropped FROM extractions",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(rows, serde_json::json!([{"n": 200, "dropped": 30}]));
}
