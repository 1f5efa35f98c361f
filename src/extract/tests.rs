use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// A sample: `(pattern, line, fields)`.
type Sample = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Each built-in pattern on a real-looking line, with every field it must give (and no
/// other).
const MATCHES: &[Sample] = &[
    // Rust
    ("rust-panic", "thread 'main' panicked at src/main.rs:5:9:", &[("thread", "main"), ("file", "src/main.rs"), ("line", "5"), ("column", "9")]),
    ("rust-panic", "thread 'tests::parse' panicked at 'called `Option::unwrap()` on a `None` value', src/lib.rs:42:17", &[("thread", "tests::parse"), ("message", "called `Option::unwrap()` on a `None` value"), ("file", "src/lib.rs"), ("line", "42"), ("column", "17")]),
    ("rust-compiler-error", "error[E0308]: mismatched types", &[("code", "E0308"), ("message", "mismatched types")]),
    ("rust-warning", "warning: unused variable: `x`", &[("message", "unused variable: `x`")]),
    ("rust-warning", "warning[clippy::needless_return]: unneeded `return` statement", &[("code", "clippy::needless_return"), ("message", "unneeded `return` statement")]),
    ("rust-location", "  --> src/main.rs:12:5", &[("file", "src/main.rs"), ("line", "12"), ("column", "5")]),
    ("cargo-could-not-compile", "error: could not compile `architect` (lib) due to 2 previous errors", &[("crate", "architect"), ("target", "lib")]),
    ("rust-backtrace-frame", "   3: core::panicking::panic_fmt", &[("index", "3"), ("function", "core::panicking::panic_fmt")]),
    ("rust-backtrace-frame", "  12: <alloc::boxed::Box<F,A> as core::ops::function::FnOnce<Args>>::call_once", &[("index", "12"), ("function", "<alloc::boxed::Box<F,A> as core::ops::function::FnOnce<Args>>::call_once")]),
    ("rust-assertion", "assertion `left == right` failed: totals differ", &[("assertion", "left == right"), ("message", "totals differ")]),
    ("cargo-test-result", "test result: FAILED. 41 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.31s", &[("status", "FAILED"), ("passed", "41"), ("failed", "2"), ("ignored", "1"), ("measured", "0"), ("filtered", "0"), ("duration_s", "0.31")]),
    ("cargo-test-result", "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 12 filtered out", &[("status", "ok"), ("passed", "3"), ("failed", "0"), ("ignored", "0"), ("measured", "0"), ("filtered", "12")]),
    ("cargo-test-failed", "test extract::tests::every_pattern ... FAILED", &[("test", "extract::tests::every_pattern")]),
    ("cargo-test-output", "---- extract::tests::every_pattern stdout ----", &[("test", "extract::tests::every_pattern")]),
    // Python
    ("python-traceback", "Traceback (most recent call last):", &[]),
    ("python-frame", "  File \"/app/main.py\", line 12, in <module>", &[("file", "/app/main.py"), ("line", "12"), ("function", "<module>")]),
    ("python-frame", "  File \"<stdin>\", line 1", &[("file", "<stdin>"), ("line", "1")]),
    ("exception", "ValueError: invalid literal for int() with base 10: 'x'", &[("kind", "ValueError"), ("message", "invalid literal for int() with base 10: 'x'")]),
    ("exception", "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='x', port=443)", &[("kind", "requests.exceptions.ConnectionError"), ("message", "HTTPSConnectionPool(host='x', port=443)")]),
    ("exception", "TypeError: Cannot read properties of undefined (reading 'map')", &[("kind", "TypeError"), ("message", "Cannot read properties of undefined (reading 'map')")]),
    ("exception", "Error: ENOENT: no such file or directory, open 'config.json'", &[("kind", "Error"), ("message", "ENOENT: no such file or directory, open 'config.json'")]),
    ("exception", "java.lang.IllegalStateException: not started", &[("kind", "java.lang.IllegalStateException"), ("message", "not started")]),
    ("exception", "KeyboardInterrupt", &[("kind", "KeyboardInterrupt")]),
    ("python-warning", "/app/util.py:8: DeprecationWarning: datetime.utcnow() is deprecated", &[("file", "/app/util.py"), ("line", "8"), ("kind", "DeprecationWarning"), ("message", "datetime.utcnow() is deprecated")]),
    ("pytest-summary", "=========== 1 failed, 10 passed, 2 skipped, 3 warnings in 0.52s ===========", &[("failed", "1"), ("passed", "10"), ("skipped", "2"), ("warnings", "3"), ("duration_s", "0.52")]),
    ("pytest-summary", "============================== 4 passed in 0.03s ===============================", &[("passed", "4"), ("duration_s", "0.03")]),
    ("pytest-summary", "===== 2 passed, 1 error in 1.20s =====", &[("passed", "2"), ("errors", "1"), ("duration_s", "1.20")]),
    ("pytest-failed", "FAILED tests/test_api.py::test_login - AssertionError: assert 401 == 200", &[("test", "tests/test_api.py::test_login"), ("message", "AssertionError: assert 401 == 200")]),
    ("pytest-error", "ERROR tests/test_db.py - ModuleNotFoundError: No module named 'psycopg'", &[("test", "tests/test_db.py"), ("message", "ModuleNotFoundError: No module named 'psycopg'")]),
    ("pytest-assertion", "E       assert 401 == 200", &[("message", "assert 401 == 200")]),
    ("mypy-error", "src/app.py:14: error: Incompatible return value type (got \"str\", expected \"int\")  [return-value]", &[("file", "src/app.py"), ("line", "14"), ("message", "Incompatible return value type (got \"str\", expected \"int\")"), ("code", "return-value")]),
    ("python-lint", "src/app.py:1:8: F401 [*] `os` imported but unused", &[("file", "src/app.py"), ("line", "1"), ("column", "8"), ("code", "F401"), ("message", "[*] `os` imported but unused")]),
    // JavaScript / TypeScript
    ("js-uncaught", "Uncaught ReferenceError: foo is not defined", &[("kind", "ReferenceError"), ("message", "foo is not defined")]),
    ("node-error-code", "TypeError [ERR_INVALID_ARG_TYPE]: The \"path\" argument must be of type string. Received undefined", &[("kind", "TypeError"), ("code", "ERR_INVALID_ARG_TYPE"), ("message", "The \"path\" argument must be of type string. Received undefined")]),
    ("js-stack-frame", "    at Object.<anonymous> (/app/index.js:3:7)", &[("function", "Object.<anonymous>"), ("file", "/app/index.js"), ("line", "3"), ("column", "7")]),
    ("js-stack-frame", "    at /app/node_modules/express/lib/router/index.js:284:15", &[("file", "/app/node_modules/express/lib/router/index.js"), ("line", "284"), ("column", "15")]),
    ("js-stack-frame", "    at async Promise.all (file:///app/src/run.mjs:10:3)", &[("function", "async Promise.all"), ("file", "file:///app/src/run.mjs"), ("line", "10"), ("column", "3")]),
    ("tsc-error", "src/index.ts(12,5): error TS2322: Type 'string' is not assignable to type 'number'.", &[("file", "src/index.ts"), ("line", "12"), ("column", "5"), ("code", "TS2322"), ("message", "Type 'string' is not assignable to type 'number'.")]),
    ("tsc-error-pretty", "src/app.tsx:7:10 - error TS2304: Cannot find name 'useState'.", &[("file", "src/app.tsx"), ("line", "7"), ("column", "10"), ("code", "TS2304"), ("message", "Cannot find name 'useState'.")]),
    ("eslint-problem", "  12:5  error  'x' is assigned a value but never used  no-unused-vars", &[("line", "12"), ("column", "5"), ("level", "error"), ("message", "'x' is assigned a value but never used"), ("rule", "no-unused-vars")]),
    ("eslint-problem", "   3:1   warning  Unexpected console statement  no-console", &[("line", "3"), ("column", "1"), ("level", "warning"), ("message", "Unexpected console statement"), ("rule", "no-console")]),
    ("npm-error", "npm ERR! code ELIFECYCLE", &[("message", "code ELIFECYCLE")]),
    ("npm-error", "npm error code E404", &[("message", "code E404")]),
    ("jest-tests", "Tests:       1 failed, 2 skipped, 10 passed, 13 total", &[("failed", "1"), ("skipped", "2"), ("passed", "10"), ("total", "13")]),
    ("jest-suites", "Test Suites: 1 failed, 3 passed, 4 total", &[("failed", "1"), ("passed", "3"), ("total", "4")]),
    ("jest-fail-file", "FAIL src/components/Button.test.tsx (5.21 s)", &[("file", "src/components/Button.test.tsx"), ("duration", "5.21 s")]),
    ("jest-failed-test", "  ● Button › renders the label", &[("test", "Button › renders the label")]),
    ("vitest-tests", "      Tests  1 failed | 3 passed (4)", &[("failed", "1"), ("passed", "3"), ("total", "4")]),
    // Go
    ("go-panic", "panic: runtime error: index out of range [5] with length 3", &[("message", "runtime error: index out of range [5] with length 3")]),
    ("go-panic", "panic: boom [recovered]", &[("message", "boom")]),
    ("go-fatal", "fatal error: all goroutines are asleep - deadlock!", &[("message", "all goroutines are asleep - deadlock!")]),
    ("go-goroutine", "goroutine 1 [running]:", &[("id", "1"), ("state", "running")]),
    ("go-frame", "\t/home/dev/app/main.go:12 +0x1d", &[("file", "/home/dev/app/main.go"), ("line", "12")]),
    ("go-compile-error", "./main.go:12:2: undefined: foo", &[("file", "./main.go"), ("line", "12"), ("column", "2"), ("message", "undefined: foo")]),
    ("go-test-fail", "--- FAIL: TestParse (0.00s)", &[("test", "TestParse"), ("duration_s", "0.00")]),
    ("go-test-fail", "    --- FAIL: TestParse/empty_input (0.01s)", &[("test", "TestParse/empty_input"), ("duration_s", "0.01")]),
    ("go-test-package", "ok  \tgithub.com/acme/app/parser\t0.012s", &[("status", "ok"), ("package", "github.com/acme/app/parser"), ("duration_s", "0.012")]),
    ("go-test-package", "FAIL\tgithub.com/acme/app/api\t0.245s", &[("status", "FAIL"), ("package", "github.com/acme/app/api"), ("duration_s", "0.245")]),
    ("go-test-package", "ok  \tgithub.com/acme/app/util\t(cached)", &[("status", "ok"), ("package", "github.com/acme/app/util")]),
    ("go-test-log", "    parse_test.go:27: got 3, want 4", &[("file", "parse_test.go"), ("line", "27"), ("message", "got 3, want 4")]),
    // Java
    ("java-exception", "Exception in thread \"main\" java.lang.NullPointerException: Cannot invoke \"String.length()\"", &[("thread", "main"), ("kind", "java.lang.NullPointerException"), ("message", "Cannot invoke \"String.length()\"")]),
    ("java-caused-by", "Caused by: java.io.FileNotFoundException: app.conf (No such file or directory)", &[("kind", "java.io.FileNotFoundException"), ("message", "app.conf (No such file or directory)")]),
    ("java-frame", "\tat com.acme.App.main(App.java:14)", &[("function", "com.acme.App.main"), ("file", "App.java"), ("line", "14")]),
    ("java-frame", "        at com.acme.Service$Inner.<init>(Service.kt:88)", &[("function", "com.acme.Service$Inner.<init>"), ("file", "Service.kt"), ("line", "88")]),
    ("javac-error", "src/main/java/com/acme/App.java:5: error: cannot find symbol", &[("file", "src/main/java/com/acme/App.java"), ("line", "5"), ("message", "cannot find symbol")]),
    ("maven-error", "[ERROR] Failed to execute goal org.apache.maven.plugins:maven-surefire-plugin:3.2.5:test", &[("message", "Failed to execute goal org.apache.maven.plugins:maven-surefire-plugin:3.2.5:test")]),
    ("junit-tests-run", "[INFO] Tests run: 12, Failures: 1, Errors: 0, Skipped: 2, Time elapsed: 0.5 s", &[("total", "12"), ("failed", "1"), ("errors", "0"), ("skipped", "2")]),
    ("gradle-task-failed", "> Task :app:compileJava FAILED", &[("task", ":app:compileJava")]),
    // C / C++
    ("c-compiler-error", "main.c:12:5: error: expected ';' before 'return'", &[("file", "main.c"), ("line", "12"), ("column", "5"), ("message", "expected ';' before 'return'")]),
    ("c-compiler-error", "src/net/socket.cpp:88:10: fatal error: openssl/ssl.h: No such file or directory", &[("file", "src/net/socket.cpp"), ("line", "88"), ("column", "10"), ("message", "openssl/ssl.h: No such file or directory")]),
    ("c-compiler-warning", "util.c:40:9: warning: unused variable 'n' [-Wunused-variable]", &[("file", "util.c"), ("line", "40"), ("column", "9"), ("message", "unused variable 'n'"), ("flag", "-Wunused-variable")]),
    ("linker-undefined-reference", "/usr/bin/ld: main.o: in function `main': main.c:(.text+0x1a): undefined reference to `parse_args'", &[("symbol", "parse_args")]),
    ("make-error", "make: *** [Makefile:12: all] Error 2", &[("target", "Makefile:12: all"), ("code", "2")]),
    ("make-error", "make[1]: *** No rule to make target 'install'.  Stop.", &[("message", "No rule to make target 'install'.  Stop.")]),
    ("cmake-error", "CMake Error at CMakeLists.txt:5 (find_package):", &[("file", "CMakeLists.txt"), ("line", "5")]),
    ("sanitizer", "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010", &[("sanitizer", "AddressSanitizer"), ("message", "heap-use-after-free on address 0x602000000010")]),
    ("segfault", "bash: line 1: 4242 Segmentation fault      (core dumped) ./a.out", &[("pid", "4242")]),
    ("segfault", "Segmentation fault (core dumped)", &[]),
    // Shell and logs
    ("command-not-found", "bash: pytset: command not found", &[("command", "pytset")]),
    ("command-not-found", "bash: line 3: cargoo: command not found", &[("command", "cargoo")]),
    ("no-such-file", "cat: notes.txt: No such file or directory", &[("program", "cat"), ("path", "notes.txt")]),
    ("no-such-file", "ls: cannot access 'build/out': No such file or directory", &[("program", "ls"), ("path", "build/out")]),
    ("log-error", "ERROR:root:connection refused", &[("level", "ERROR"), ("message", "root:connection refused")]),
    ("log-error", "FATAL: password authentication failed for user \"app\"", &[("level", "FATAL"), ("message", "password authentication failed for user \"app\"")]),
    // Files changed
    ("git-diff-stat-file", " src/extract/mod.rs | 12 ++++++++----", &[("file", "src/extract/mod.rs"), ("changes", "12")]),
    ("git-diff-stat-file", " docs/screenshot.png | Bin 0 -> 10240 bytes", &[("file", "docs/screenshot.png")]),
    ("git-diff-stat-summary", " 3 files changed, 40 insertions(+), 2 deletions(-)", &[("files", "3"), ("insertions", "40"), ("deletions", "2")]),
    ("git-diff-stat-summary", " 1 file changed, 1 insertion(+)", &[("files", "1"), ("insertions", "1")]),
    ("git-status-change", "\tmodified:   src/lib.rs", &[("change", "modified"), ("file", "src/lib.rs")]),
    ("git-status-change", "\tnew file:   config/extract.toml", &[("change", "new file"), ("file", "config/extract.toml")]),
    ("git-diff-header", "diff --git a/src/sql.rs b/src/sql.rs", &[("file", "src/sql.rs"), ("new_file", "src/sql.rs")]),
    ("merge-conflict", "CONFLICT (content): Merge conflict in src/daemon/tasks.rs", &[("kind", "content"), ("file", "src/daemon/tasks.rs")]),
    ("agent-tool-edit", "⏺ Update(src/main.rs)", &[("action", "Update"), ("file", "src/main.rs")]),
    ("agent-tool-edit", "● Write(tests/test_api.py)", &[("action", "Write"), ("file", "tests/test_api.py")]),
    ("agent-edited-file", "• Edited src/parser.rs (+12 -3)", &[("action", "Edited"), ("file", "src/parser.rs"), ("insertions", "12"), ("deletions", "3")]),
    ("agent-edited-file", "Created file docs/usage.md", &[("action", "Created"), ("file", "docs/usage.md")]),
    ("aider-applied-edit", "Applied edit to app/models.py", &[("file", "app/models.py")]),
    ("code-changes", "Total code changes:    12 lines added, 3 lines removed", &[("added", "12"), ("removed", "3")]),
    // Commits
    ("git-commit", "[extract 1a2b3c4] Extraction engine: patterns as data", &[("branch", "extract"), ("sha", "1a2b3c4"), ("message", "Extraction engine: patterns as data")]),
    ("git-commit", "[main (root-commit) 9f8e7d6] Initial commit", &[("branch", "main"), ("sha", "9f8e7d6"), ("message", "Initial commit")]),
    ("git-push", "   1a2b3c4..5d6e7f8  main -> main", &[("from", "1a2b3c4"), ("to", "5d6e7f8"), ("source", "main"), ("destination", "main")]),
    ("git-push", " + 1a2b3c4...5d6e7f8 feature -> feature (forced update)", &[("from", "1a2b3c4"), ("to", "5d6e7f8"), ("source", "feature"), ("destination", "feature")]),
    ("git-log-commit", "commit 0123456789abcdef0123456789abcdef01234567 (HEAD -> main, origin/main)", &[("sha", "0123456789abcdef0123456789abcdef01234567"), ("refs", "HEAD -> main, origin/main")]),
    // URLs
    ("url", "See https://docs.rs/regex/latest/regex/struct.RegexSet.html.", &[("url", "https://docs.rs/regex/latest/regex/struct.RegexSet.html")]),
    ("url", "server listening on http://127.0.0.1:8080/health (ready)", &[("url", "http://127.0.0.1:8080/health")]),
    ("pull-request", "remote:   https://github.com/acme/app/pull/123", &[("host", "github.com"), ("repo", "acme/app"), ("number", "123")]),
    ("pull-request", "View merge request: https://gitlab.com/acme/app/-/merge_requests/7", &[("host", "gitlab.com"), ("repo", "acme/app"), ("number", "7")]),
    // Cost and tokens
    ("total-cost", "Total cost:            $0.5512", &[("cost_usd", "0.5512")]),
    ("claude-model-usage", "    claude-3-5-haiku:  1.2k input, 50 output, 0 cache read, 0 cache write ($0.0012)", &[("model", "claude-3-5-haiku"), ("input_tokens", "1.2k"), ("output_tokens", "50"), ("cache_read_tokens", "0"), ("cache_write_tokens", "0"), ("cost_usd", "0.0012")]),
    ("aider-tokens", "Tokens: 2.3k sent, 120 received. Cost: $0.01 message, $0.05 session.", &[("sent", "2.3k"), ("received", "120"), ("cost_usd", "0.01"), ("session_cost_usd", "0.05")]),
    ("codex-token-usage", "Token usage: total=1,234 input=1,000 (+ 200 cached) output=234", &[("total_tokens", "1,234"), ("input_tokens", "1,000"), ("cached_tokens", "200"), ("output_tokens", "234")]),
    ("token-count", "Context: 45,210 tokens used of 200k", &[("tokens", "45,210")]),
    ("token-count", "↓ 1.2k tokens", &[("tokens", "1.2k")]),
    ("cost-line", "Cost: $0.42", &[("cost_usd", "0.42")]),
    ("cost-line", "Spent so far: $12.50", &[("cost_usd", "12.50")]),
];

/// `(pattern, line)`: look-alikes the pattern must not match.
const NOT_MATCHES: &[(&str, &str)] = &[
    ("rust-panic", "the thread panicked at the sight of it"),
    ("rust-compiler-error", "error: could not compile `x`"),
    ("rust-warning", "warning: 2 warnings emitted"),
    ("rust-location", "--> see below"),
    ("rust-backtrace-frame", "  1: first item of a list"),
    ("cargo-test-result", "test result: looks fine"),
    (
        "cargo-test-failed",
        "test extract::tests::every_pattern ... ok",
    ),
    ("python-frame", "File \"x\" was not found"),
    ("exception", "Errors: none"),
    ("exception", "ERROR: this is a log line"),
    ("exception", "The Error: lowercase prose"),
    ("pytest-summary", "=== test session starts ==="),
    ("pytest-failed", "FAILED to connect"),
    ("pytest-error", "ERROR connecting to the database"),
    ("pytest-assertion", "E assert with one space"),
    ("js-stack-frame", "    at the end of the day"),
    ("js-stack-frame", "\tat com.acme.App.main(App.java:14)"),
    (
        "java-frame",
        "    at Object.<anonymous> (/app/index.js:3:7)",
    ),
    ("tsc-error", "src/index.ts(12,5): warning TS6133: unused"),
    ("npm-error", "npm WARN deprecated inflight@1.0.6"),
    ("jest-fail-file", "FAIL: something else"),
    ("go-panic", "don't panic: it's fine"),
    ("go-test-fail", "--- PASS: TestParse (0.00s)"),
    ("go-test-package", "ok, let's go"),
    ("c-compiler-error", "main.rs:12:5: error: not a C file"),
    ("make-error", "make sure to run tests"),
    ("segfault", "we talked about Segmentation fault handling"),
    (
        "command-not-found",
        "the command not found in PATH was cargo",
    ),
    ("log-error", "Errors: 0"),
    ("git-diff-stat-file", "a | b"),
    ("git-diff-stat-summary", "3 files changed in total"),
    ("git-status-change", "modified: nothing"),
    ("agent-tool-edit", "Update the README (soon)"),
    ("agent-edited-file", "Edited by hand"),
    ("git-commit", "[INFO] Building app 1.0"),
    ("git-commit", "[main abcdefg] not hex"),
    ("git-push", "   1a2b..5d6e  too short"),
    ("url", "ftp://example.com/file"),
    ("pull-request", "https://github.com/acme/app/issues/123"),
    ("total-cost", "Total costs are unknown"),
    ("token-count", "v1.2 tokenizer"),
    ("cost-line", "The cost: $5 later in a sentence"),
    (
        "cargo-could-not-compile",
        "error: could not find `Cargo.toml` in `/work`",
    ),
    ("rust-assertion", "the assertion failed silently"),
    ("cargo-test-output", "---- running ----"),
    (
        "python-traceback",
        "Traceback shows the most recent call last",
    ),
    ("python-warning", "src/app.py:8: Warning about nothing"),
    (
        "mypy-error",
        "src/app.py:14: note: Revealed type is \"builtins.int\"",
    ),
    ("python-lint", "src/app.py:1:8: unused import"),
    ("js-uncaught", "uncaught exception handler installed"),
    (
        "node-error-code",
        "TypeError: Cannot read properties of undefined",
    ),
    ("tsc-error-pretty", "src/app.tsx:7:10 - warning: deprecated"),
    ("eslint-problem", "  12:5  info  just a note  no-console"),
    ("jest-tests", "Tests: none found"),
    ("jest-suites", "Test Suites: pending"),
    ("jest-failed-test", "  ● Loading the suite"),
    ("vitest-tests", "      Tests  passed"),
    ("go-fatal", "a fatal error: in prose"),
    ("go-goroutine", "goroutine leak detected in the pool"),
    ("go-frame", "\t/home/dev/app/main.rs:12"),
    ("go-compile-error", "./main.rs:12:2: undefined: foo"),
    ("go-test-log", "    parse_test.py:27: got 3, want 4"),
    ("java-exception", "Exception in the handler was caught"),
    ("java-caused-by", "Caused by a missing file"),
    (
        "javac-error",
        "src/App.java:5: warning: [deprecation] old API",
    ),
    ("maven-error", "[WARNING] Using platform encoding"),
    ("junit-tests-run", "Tests run so far: 12"),
    ("gradle-task-failed", "> Task :app:compileJava UP-TO-DATE"),
    ("c-compiler-warning", "util.c:40:9: note: declared here"),
    (
        "linker-undefined-reference",
        "no undefined references were found",
    ),
    (
        "cmake-error",
        "CMake Warning at CMakeLists.txt:5 (message):",
    ),
    (
        "sanitizer",
        "==4242==WARNING: AddressSanitizer failed to allocate 0x1000 bytes",
    ),
    ("no-such-file", "cat: notes.txt: Permission denied"),
    ("git-diff-header", "diff -u old.txt new.txt"),
    ("merge-conflict", "Auto-merging src/daemon/tasks.rs"),
    ("aider-applied-edit", "Applied edits to 3 files"),
    ("code-changes", "Total code changes: none"),
    ("git-log-commit", "commit 1a2b3c4 is the short form"),
    ("claude-model-usage", "    claude-3-5-haiku:  1.2k input"),
    ("aider-tokens", "Tokens: 2.3k sent"),
    ("codex-token-usage", "Token usage: unknown"),
];

/// Ordinary output: no pattern may match any of these.
const NOISE: &[&str] = &[
    "   Compiling architect v0.1.0 (/work/main)",
    "    Finished `dev` profile [optimized + debuginfo] target(s) in 41.20s",
    "     Running unittests src/lib.rs (target/debug/deps/architect-1a2b3c4d)",
    "running 12 tests",
    "test extract::tests::noise ... ok",
    "collected 14 items",
    "tests/test_api.py ....F.                                                  [ 42%]",
    "PASS src/components/Button.test.tsx",
    "=== RUN   TestParse",
    "--- PASS: TestParse (0.00s)",
    "[INFO] BUILD SUCCESS",
    "added 123 packages, and audited 124 packages in 3s",
    "On branch main",
    "Your branch is up to date with 'origin/main'.",
    "nothing to commit, working tree clean",
    "Reading the file to understand the structure.",
    "I'll fix the failing test by handling the empty input case.",
    "def parse(text: str) -> list[str]:",
    "    return [line for line in text.splitlines() if line]",
    "fn main() { println!(\"hello\"); }",
    "",
    "   ",
    "Downloading crates ...",
    "  Downloaded regex v1.11.1",
    "$ ls -la",
    "drwxr-xr-x  5 dev dev 4096 Dec  2 09:00 src",
    "[0] architect$ ",
];

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[test]
fn the_built_in_set_parses_and_has_at_least_fifty_patterns() {
    let specs = builtin_specs();
    assert!(specs.len() >= 50, "{} patterns", specs.len());
    assert_eq!(builtin().specs().count(), specs.len());
}

#[test]
fn every_built_in_pattern_matches_its_sample_lines_with_the_right_fields() {
    let x = builtin();
    let mut wrong = Vec::new();
    for (name, line, want) in MATCHES {
        let all = x.extract(line);
        let got: Vec<&Extraction> = all.iter().filter(|e| &e.pattern == name).collect();
        match got.as_slice() {
            [e] if e.fields == fields(want) && e.line == 1 && e.text == *line => {}
            _ => wrong.push(format!("{name} on {line:?}: {got:?}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_built_in_pattern_has_a_sample_line_and_a_look_alike() {
    let sampled: BTreeSet<&str> = MATCHES.iter().map(|(n, _, _)| *n).collect();
    let missing: Vec<&str> = builtin_specs()
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| !sampled.contains(n))
        .collect();
    assert!(missing.is_empty(), "no sample line for {missing:?}");
    let rejected: BTreeSet<&str> = NOT_MATCHES.iter().map(|(n, _)| *n).collect();
    let missing: Vec<&str> = builtin_specs()
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| !rejected.contains(n))
        .collect();
    assert!(missing.is_empty(), "no look-alike for {missing:?}");
    let known: BTreeSet<&str> = builtin_specs().iter().map(|s| s.name.as_str()).collect();
    for (name, _) in NOT_MATCHES {
        assert!(
            known.contains(name),
            "NOT_MATCHES names unknown pattern {name}"
        );
    }
}

#[test]
fn look_alike_lines_do_not_match_their_pattern() {
    let x = builtin();
    let wrong: Vec<String> = NOT_MATCHES
        .iter()
        .filter_map(|(name, line)| {
            let hit = x.extract(line).into_iter().find(|e| &e.pattern == name)?;
            Some(format!("{name} matched {line:?}: {hit:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn ordinary_output_lines_match_no_pattern() {
    let x = builtin();
    for line in NOISE {
        assert_eq!(x.extract(line), Vec::new(), "{line:?}");
    }
}

#[test]
fn extractions_carry_line_numbers_category_and_severity_in_line_order() {
    let text = "running 2 tests\r\n\
                test a::b ... FAILED\n\
                ok\n\
                Traceback (most recent call last):\n  \
                File \"/app/x.py\", line 3, in f\n\
                ValueError: bad\n";
    let got = builtin().extract(text);
    let summary: Vec<(u64, &str, Category, Severity)> = got
        .iter()
        .map(|e| (e.line, e.pattern.as_str(), e.category, e.severity))
        .collect();
    assert_eq!(
        summary,
        [
            (2, "cargo-test-failed", Category::Test, Severity::Error),
            (4, "python-traceback", Category::Error, Severity::Error),
            (5, "python-frame", Category::Stack, Severity::Info),
            (6, "exception", Category::Error, Severity::Error),
        ]
    );
}

#[test]
fn a_line_that_matches_two_patterns_gives_two_extractions() {
    let got = builtin().extract("remote:   https://github.com/acme/app/pull/9");
    let names: Vec<&str> = got.iter().map(|e| e.pattern.as_str()).collect();
    assert_eq!(names, ["url", "pull-request"]);
}

#[test]
fn the_limit_keeps_the_first_matches_and_counts_the_rest() {
    let text = "panic: a\npanic: b\npanic: c\npanic: d\n";
    let got = builtin().extract_limited(text, 3);
    assert_eq!(got.extractions.len(), 3);
    assert_eq!(got.extractions[2].fields["message"], "c");
    assert_eq!(got.dropped, 1);
}

#[test]
fn long_lines_are_kept_to_the_text_limit_at_a_character_boundary() {
    let line = format!("panic: {}", "é".repeat(400));
    let got = builtin().extract(&line);
    assert_eq!(got.len(), 1);
    assert!(got[0].text.len() <= MAX_TEXT_BYTES);
    assert!(got[0].text.len() >= MAX_TEXT_BYTES - 1);
    // The field is not cut: it is what the regex captured.
    assert_eq!(got[0].fields["message"].chars().count(), 400);
}

fn spec(name: &str, regex: &str) -> PatternSpec {
    PatternSpec {
        name: name.into(),
        description: String::new(),
        regex: regex.into(),
        category: Category::Error,
        severity: Severity::Error,
    }
}

#[test]
fn a_bad_regex_is_an_error_naming_the_pattern() {
    let err =
        Extractor::new(vec![spec("good", "^ok$"), spec("broken-one", "(unclosed")]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"broken-one\""), "{msg}");
    assert!(msg.contains("invalid regex"), "{msg}");
}

#[test]
fn a_duplicate_or_badly_named_pattern_is_an_error_naming_it() {
    let err = Extractor::new(vec![spec("twice", "a"), spec("twice", "b")]).unwrap_err();
    assert_eq!(err, ExtractError::Duplicate("twice".into()));
    assert!(err.to_string().contains("\"twice\" is defined twice"));
    let err = Extractor::new(vec![spec("Has Spaces", "a")]).unwrap_err();
    assert_eq!(err, ExtractError::BadName("Has Spaces".into()));
}

#[test]
fn a_patterns_file_with_an_unknown_field_or_category_says_where() {
    let text =
        "[[pattern]]\nname = \"x\"\nregex = \"x\"\ncategory = \"oops\"\nseverity = \"info\"\n";
    let msg = parse(text).unwrap_err().to_string();
    assert!(msg.contains("oops") && msg.contains("line 4"), "{msg}");
    let text = "[[pattern]]\nname = \"x\"\nregex = \"x\"\ncategory = \"url\"\nseverity = \"info\"\ncolour = 1\n";
    let msg = parse(text).unwrap_err().to_string();
    assert!(msg.contains("colour"), "{msg}");
    let text =
        "[[pattern]]\nname = \"bad-re\"\nregex = \"[\"\ncategory = \"url\"\nseverity = \"info\"\n";
    let msg = parse(text).unwrap_err().to_string();
    assert!(msg.contains("\"bad-re\""), "{msg}");
}

#[test]
fn merge_replaces_built_ins_by_name_and_appends_the_rest() {
    let base = vec![spec("a", "a"), spec("b", "b")];
    let extra = vec![spec("c", "c"), spec("a", "A")];
    let merged = merge(&base, &extra);
    let got: Vec<(&str, &str)> = merged
        .iter()
        .map(|s| (s.name.as_str(), s.regex.as_str()))
        .collect();
    assert_eq!(got, [("a", "A"), ("b", "b"), ("c", "c")]);
}

#[test]
fn category_and_severity_names_are_the_ones_written_in_toml() {
    for c in [
        Category::Error,
        Category::Stack,
        Category::Test,
        Category::File,
        Category::Commit,
        Category::Url,
        Category::Cost,
    ] {
        assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
    }
    for s in [Severity::Info, Severity::Warning, Severity::Error] {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
}

#[test]
fn the_set_prefilter_finds_exactly_what_every_regex_on_every_line_finds() {
    // Every line of the tables and a corpus, through the engine and through the slow
    // way: each pattern's own regex on each line.
    let (corpus, _) = super::corpus::corpus(5_000, 100, 11);
    let mut lines: Vec<&str> = corpus.lines().collect();
    lines.extend(MATCHES.iter().map(|(_, l, _)| *l));
    lines.extend(NOT_MATCHES.iter().map(|(_, l)| *l));
    lines.extend(NOISE);
    let text = lines.join("\n");
    let regexes: Vec<(String, regex::Regex)> = builtin_specs()
        .iter()
        .map(|s| (s.name.clone(), regex::Regex::new(&s.regex).unwrap()))
        .collect();
    let mut slow = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        for (name, re) in &regexes {
            if re.is_match(line) {
                slow.push((i as u64 + 1, name.clone()));
            }
        }
    }
    let fast: Vec<(u64, String)> = builtin()
        .extract(&text)
        .into_iter()
        .map(|e| (e.line, e.pattern))
        .collect();
    assert!(fast.len() > 500, "{}", fast.len());
    assert_eq!(fast, slow);
}
