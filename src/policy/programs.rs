//! What the policy knows about particular programs: wrappers that run another command
//! (`env`, `nohup`, `timeout`, `xargs`, …), git's global options and push refspecs,
//! interpreters reading code from their input, and which arguments a program writes.

use super::arg::Arg;
use super::glob;

/// How a wrapper's own options look; the command it runs follows them.
pub(crate) struct Wrapper {
    /// Options that take a value (`-n 5`, `-n5`, `--adjustment=5`).
    pub value_opts: &'static [&'static str],
    /// Options without a value.
    pub flags: &'static [&'static str],
    /// Options after which there is no inner command (`command -v x`).
    pub stop: &'static [&'static str],
    /// Positional arguments before the command (timeout's duration).
    pub leading: usize,
    /// `nice -5`.
    pub numeric: bool,
}

const NONE: &[&str] = &[];

/// The wrapper table. `sudo` and friends are not here: a deny rule refuses them.
pub(crate) fn wrapper(base: &str) -> Option<Wrapper> {
    let w = |value_opts, flags, stop, leading, numeric| {
        Some(Wrapper {
            value_opts,
            flags,
            stop,
            leading,
            numeric,
        })
    };
    match base {
        "env" => w(
            &["-u", "--unset", "-C", "--chdir", "-S", "--split-string"],
            &[
                "-i",
                "--ignore-environment",
                "-0",
                "--null",
                "-v",
                "--debug",
                "-",
            ],
            NONE,
            0,
            false,
        ),
        "nohup" | "builtin" | "busybox" => w(NONE, NONE, NONE, 0, false),
        "timeout" => w(
            &["-s", "--signal", "-k", "--kill-after"],
            &["--foreground", "--preserve-status", "-v", "--verbose"],
            NONE,
            1,
            false,
        ),
        "nice" => w(&["-n", "--adjustment"], NONE, NONE, 0, true),
        "command" => w(NONE, &["-p"], &["-v", "-V"], 0, false),
        "exec" => w(&["-a"], &["-c", "-l"], NONE, 0, false),
        "time" => w(
            &["-o", "--output", "-f", "--format"],
            &[
                "-p",
                "-a",
                "--append",
                "-v",
                "--verbose",
                "-q",
                "--quiet",
                "--portability",
            ],
            NONE,
            0,
            false,
        ),
        "stdbuf" => w(
            &["-i", "-o", "-e", "--input", "--output", "--error"],
            NONE,
            NONE,
            0,
            false,
        ),
        "setsid" => w(
            NONE,
            &["-c", "--ctty", "-f", "--fork", "-w", "--wait"],
            NONE,
            0,
            false,
        ),
        "ionice" => w(
            &["-c", "--class", "-n", "--classdata"],
            &["-t", "--ignore"],
            &["-p", "--pid", "-P", "--pgid", "-u", "--uid"],
            0,
            false,
        ),
        "xargs" => w(
            &[
                "-a",
                "--arg-file",
                "-d",
                "--delimiter",
                "-E",
                "--eof",
                "-I",
                "--replace",
                "-L",
                "--max-lines",
                "-n",
                "--max-args",
                "-P",
                "--max-procs",
                "-s",
                "--max-chars",
                "--process-slot-var",
            ],
            &[
                "-0",
                "--null",
                "-r",
                "--no-run-if-empty",
                "-t",
                "--verbose",
                "-p",
                "--interactive",
                "-x",
                "--exit",
                "-o",
                "--open-tty",
                "--show-limits",
                "-i",
                "-l",
                "-e",
            ],
            NONE,
            0,
            false,
        ),
        _ => None,
    }
}

/// Where a wrapper's inner command starts in `args`, and what its options said.
pub(crate) struct Unwrapped<'a> {
    /// Index of the inner program in `args` (`args.len()` when there is none).
    pub start: usize,
    /// The wrapper takes no inner command with these options (`command -v`).
    pub stopped: bool,
    /// Option values worth a look: (option, value).
    pub values: Vec<(&'static str, &'a Arg)>,
    /// Options we do not know.
    pub unknown: Vec<String>,
    /// `NAME=value` words (env), as (name, index).
    pub assigns: Vec<(String, usize)>,
}

/// Reads a wrapper's options.
pub(crate) fn unwrap<'a>(base: &str, spec: &Wrapper, args: &'a [Arg]) -> Unwrapped<'a> {
    let mut u = Unwrapped {
        start: 0,
        stopped: false,
        values: Vec::new(),
        unknown: Vec::new(),
        assigns: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let Some(v) = args[i].value.as_deref() else {
            break;
        };
        if v == "-" && base == "env" {
            i += 1;
            continue;
        }
        if v == "--" {
            i += 1;
            break;
        }
        if !v.starts_with('-') || v == "-" {
            break;
        }
        if spec.stop.contains(&v) {
            u.stopped = true;
            break;
        }
        let key = v.split_once('=').map_or(v, |(k, _)| k);
        if let Some(opt) = spec.value_opts.iter().find(|o| **o == key) {
            if v.contains('=') {
                u.values.push((opt, &args[i]));
                i += 1;
            } else {
                if let Some(val) = args.get(i + 1) {
                    u.values.push((opt, val));
                }
                i += 2;
            }
            continue;
        }
        let short = !v.starts_with("--") && v.len() > 2;
        if let Some(opt) = spec
            .value_opts
            .iter()
            .chain(spec.flags)
            .find(|o| short && o.len() == 2 && v.starts_with(**o))
        {
            // `-n5`, `-k5s`, a cluster of flags `-rt`.
            if spec.value_opts.contains(opt) {
                u.values.push((opt, &args[i]));
            }
            i += 1;
            continue;
        }
        if spec.numeric && v[1..].chars().all(|c| c.is_ascii_digit()) {
            i += 1;
            continue;
        }
        if !spec.flags.contains(&key) {
            u.unknown.push(v.to_string());
        }
        i += 1;
    }
    if !u.stopped {
        i += spec.leading;
        if spec.leading > 0 && args.get(i).and_then(|a| a.value.as_deref()) == Some("--") {
            i += 1;
        }
        if base == "env" {
            while let Some(name) = args
                .get(i)
                .and_then(|a| a.value.as_deref())
                .and_then(|v| v.split_once('='))
                .map(|(n, _)| n)
                .filter(|n| is_env_name(n))
            {
                u.assigns.push((name.to_string(), i));
                i += 1;
            }
        }
    }
    u.start = i.min(args.len());
    u
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why `date` with these arguments does more than print a date: it sets the clock (`-s`,
/// `--set`, an operand without a leading `+`) or reads dates from a file (`-f`, `--file`:
/// its lines end up in error messages). Read as GNU getopt does: clusters (`-us`),
/// attached values (`-s2030`), abbreviated long options (`--se`), options after
/// operands. An option it does not know, or an argument only known at run time, is a
/// reason too.
pub(crate) fn date_changes(args: &[Arg]) -> Option<String> {
    // (long name, takes a value; `iso-8601` takes one only attached)
    const LONG: &[(&str, bool)] = &[
        ("date", true),
        ("debug", false),
        ("file", true),
        ("iso-8601", false),
        ("reference", true),
        ("resolution", false),
        ("rfc-3339", true),
        ("rfc-email", false),
        ("rfc-822", false),
        ("rfc-2822", false),
        ("set", true),
        ("universal", false),
        ("utc", false),
        ("help", false),
        ("version", false),
    ];
    let mut i = 0;
    let mut dashdash = false;
    while i < args.len() {
        let Some(v) = args[i].value.as_deref() else {
            return Some(format!("{} is only known at run time", args[i].shown));
        };
        i += 1;
        if dashdash || !v.starts_with('-') || v == "-" {
            if !v.starts_with('+') {
                return Some(format!("the operand {v} would set the clock"));
            }
            continue;
        }
        if v == "--" {
            dashdash = true;
            continue;
        }
        if let Some(long) = v.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, val)) => (n, Some(val)),
                None => (long, None),
            };
            let hits: Vec<&(&str, bool)> =
                LONG.iter().filter(|(n, _)| n.starts_with(name)).collect();
            let hit = LONG
                .iter()
                .find(|(n, _)| *n == name)
                .or(match hits.as_slice() {
                    [one] => Some(*one),
                    _ => None,
                });
            let Some((n, takes)) = hit else {
                return Some(format!("{v} is not a date option the policy knows"));
            };
            match *n {
                "set" => return Some(format!("{v} sets the clock")),
                "file" => return Some(format!("{v} reads dates from a file")),
                _ => {}
            }
            if *takes && inline.is_none() {
                i += 1;
            }
            continue;
        }
        let cs: Vec<char> = v[1..].chars().collect();
        for (k, c) in cs.iter().enumerate() {
            match c {
                's' => return Some(format!("{v}: -s sets the clock")),
                'f' => return Some(format!("{v}: -f reads dates from a file")),
                'd' | 'r' => {
                    if k + 1 == cs.len() {
                        i += 1;
                    }
                    break;
                }
                'I' => break,
                'R' | 'u' => {}
                _ => return Some(format!("{v}: -{c} is not a date option the policy knows")),
            }
        }
    }
    None
}

/// git's global options, read up to the subcommand.
#[derive(Debug, Default)]
pub(crate) struct GitSplit {
    /// Index of the subcommand in the arguments.
    pub sub: usize,
    /// Directories named by `-C`, `--git-dir`, `--work-tree`.
    pub paths: Vec<Arg>,
    /// `-C` directories, in order (each relative to the one before).
    pub chdirs: Vec<Arg>,
    /// `--git-dir` (the last one).
    pub git_dir: Option<Arg>,
    /// `--work-tree` (the last one).
    pub work_tree: Option<Arg>,
    /// `--bare`: the current directory is the git directory.
    pub bare: bool,
    /// `-c`, `--config-env` or `--exec-path=` as written.
    pub config_override: Option<String>,
    /// A global option we do not know.
    pub unknown: Option<String>,
}

/// Reads git's global options.
pub(crate) fn git_split(args: &[Arg]) -> GitSplit {
    let mut g = GitSplit::default();
    let mut i = 0;
    while i < args.len() {
        let Some(v) = args[i].value.as_deref() else {
            break;
        };
        if !v.starts_with('-') {
            break;
        }
        let (key, inline) = match v.split_once('=') {
            Some((k, val)) => (k, Some(val)),
            None => (v, None),
        };
        match key {
            "-C" | "--git-dir" | "--work-tree" | "--namespace" | "--super-prefix"
            | "--attr-source" => {
                let val = match inline {
                    Some(val) => {
                        i += 1;
                        Some(args[i - 1].with_value(val))
                    }
                    None => {
                        i += 2;
                        args.get(i - 1).cloned()
                    }
                };
                if let Some(val) = val {
                    match key {
                        "-C" => g.chdirs.push(val.clone()),
                        "--git-dir" => g.git_dir = Some(val.clone()),
                        "--work-tree" => g.work_tree = Some(val.clone()),
                        _ => continue,
                    }
                    g.paths.push(val);
                }
            }
            "-c" | "--config-env" => {
                g.config_override = Some(v.to_string());
                i += if inline.is_some() { 1 } else { 2 };
            }
            "--exec-path" if inline.is_some() => {
                g.config_override = Some(v.to_string());
                i += 1;
            }
            "--bare" => {
                g.bare = true;
                i += 1;
            }
            "--no-pager"
            | "-P"
            | "-p"
            | "--paginate"
            | "--no-replace-objects"
            | "--literal-pathspecs"
            | "--glob-pathspecs"
            | "--noglob-pathspecs"
            | "--icase-pathspecs"
            | "--no-optional-locks"
            | "--no-lazy-fetch"
            | "--no-advice"
            | "--exec-path"
            | "--html-path"
            | "--man-path"
            | "--info-path"
            | "--version"
            | "-v"
            | "--help"
            | "-h"
            | "--list-cmds" => i += 1,
            _ if v.starts_with("-c") => {
                g.config_override = Some(v.to_string());
                i += 1;
            }
            _ => {
                g.unknown.get_or_insert_with(|| v.to_string());
                i += 1;
            }
        }
    }
    g.sub = i;
    g
}

/// The branches a `git push` (arguments after `push`) updates or deletes, as
/// (branch, deleted); `all` when it pushes every branch.
pub(crate) struct PushTargets {
    pub refs: Vec<(String, bool)>,
    pub all: bool,
}

/// Reads `git push` arguments.
pub(crate) fn push_targets(args: &[Arg]) -> PushTargets {
    let mut delete = false;
    let mut all = false;
    let mut positionals: Vec<Option<&str>> = Vec::new();
    let mut i = 0;
    let mut dashdash = false;
    while i < args.len() {
        let v = args[i].value.as_deref();
        i += 1;
        match v {
            Some("--") if !dashdash => dashdash = true,
            Some(v) if !dashdash && v.starts_with('-') && v.len() > 1 => {
                let key = v.split_once('=').map_or(v, |(k, _)| k);
                match key {
                    "--all" | "--branches" | "--mirror" => all = true,
                    "--delete" => delete = true,
                    "--repo" | "--push-option" | "--receive-pack" | "--exec"
                        if !v.contains('=') =>
                    {
                        i += 1
                    }
                    "-o" => i += 1,
                    _ if !v.starts_with("--") && v[1..].contains('d') => delete = true,
                    _ => {}
                }
            }
            other => positionals.push(other),
        }
    }
    let mut refs = Vec::new();
    for r in positionals.iter().skip(1).flatten() {
        let r = r.trim_start_matches('+');
        let (src, dst) = r.split_once(':').unwrap_or((r, r));
        let deleted = delete || src.is_empty();
        let dst = if delete { r } else { dst };
        let name = dst.strip_prefix("refs/heads/").unwrap_or(dst);
        if !name.is_empty() && name != "HEAD" {
            refs.push((name.to_string(), deleted));
        }
    }
    PushTargets { refs, all }
}

/// Whether an interpreter with these arguments reads its program from standard input.
pub(crate) fn reads_code_from_stdin(args: &[Arg], is_shell: bool) -> bool {
    for a in args {
        let Some(v) = a.value.as_deref() else {
            return false;
        };
        if v == "-" || (is_shell && v == "-s") {
            return true;
        }
        if v == "--" {
            continue;
        }
        if let Some(flags) = v.strip_prefix('-') {
            let code_flag = if is_shell {
                !flags.starts_with('-') && flags.contains('c')
            } else {
                matches!(
                    flags.chars().next(),
                    Some('c' | 'e' | 'E' | 'm' | 'r' | 'p')
                ) || matches!(flags, "-eval" | "-print" | "-command")
            };
            if code_flag {
                return false;
            }
            continue;
        }
        return false;
    }
    true
}

/// Positional arguments: not options, or anything after `--`.
pub(crate) fn positionals(args: &[Arg]) -> Vec<&Arg> {
    let mut out = Vec::new();
    let mut dashdash = false;
    for a in args {
        match a.value.as_deref() {
            Some("--") if !dashdash => dashdash = true,
            Some(v) if !dashdash && v.starts_with('-') && v.len() > 1 => {}
            _ => out.push(a),
        }
    }
    out
}

/// Whether `args` carry the option `opt` (`-i` also in clusters like `-ni` and with an
/// attached value like `-i.bak`; `--in-place` also as `--in-place=…`).
pub(crate) fn has_option(args: &[Arg], opt: &str) -> bool {
    args.iter().filter_map(|a| a.value.as_deref()).any(|v| {
        if opt.starts_with("--") {
            v == opt || v.starts_with(&format!("{opt}="))
        } else if let Some(letter) = opt.strip_prefix('-').and_then(|l| l.chars().next()) {
            v.starts_with('-') && !v.starts_with("--") && v[1..].contains(letter)
        } else {
            v.starts_with(opt)
        }
    })
}

/// The values given to option `opt`: `"-o"` (`-o F`, `-oF`, `-sSo F`), `"--output"`
/// (`--output F`, `--output=F`) or `"of="` (`of=F`).
pub(crate) fn option_values(args: &[Arg], opt: &str) -> Vec<Arg> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let Some(v) = a.value.as_deref() else {
            continue;
        };
        let next = || args.get(i + 1).cloned();
        if opt.ends_with('=') {
            if let Some(val) = v.strip_prefix(opt) {
                out.push(a.with_value(val));
            }
        } else if opt.starts_with("--") {
            if v == opt {
                out.extend(next());
            } else if let Some(val) = v.strip_prefix(&format!("{opt}=")) {
                out.push(a.with_value(val));
            }
        } else if let Some(letter) = opt.strip_prefix('-').and_then(|l| l.chars().next()) {
            if v.starts_with("--") || !v.starts_with('-') {
                continue;
            }
            let flags: Vec<char> = v[1..].chars().collect();
            if let Some(k) = flags.iter().position(|c| *c == letter) {
                if flags[..k].iter().all(char::is_ascii_alphabetic) {
                    if k + 1 == flags.len() {
                        out.extend(next());
                    } else {
                        out.push(a.with_value(&flags[k + 1..].iter().collect::<String>()));
                    }
                }
            }
        }
    }
    out
}

/// `find`'s starting points (before the first expression) and the files its `-fprint`,
/// `-fprint0`, `-fprintf`, `-fls` actions write.
pub(crate) fn find_paths(args: &[Arg]) -> (Vec<&Arg>, Vec<&Arg>) {
    let mut starts = Vec::new();
    let mut writes = Vec::new();
    let mut i = 0;
    // Leading options -H -L -P -D opts -Olevel.
    while let Some(v) = args.get(i).and_then(|a| a.value.as_deref()) {
        match v {
            "-H" | "-L" | "-P" => i += 1,
            "-D" => i += 2,
            _ if v.starts_with("-O") => i += 1,
            _ => break,
        }
    }
    while let Some(a) = args.get(i) {
        match a.value.as_deref() {
            Some(v) if v.starts_with('-') || matches!(v, "(" | ")" | "!" | ",") => break,
            _ => starts.push(a),
        }
        i += 1;
    }
    while let Some(a) = args.get(i) {
        if let Some("-fprint" | "-fprint0" | "-fprintf" | "-fls") = a.value.as_deref() {
            if let Some(f) = args.get(i + 1) {
                writes.push(f);
            }
        }
        i += 1;
    }
    (starts, writes)
}

/// Whether `base` is one of the globs.
pub(crate) fn listed(list: &[String], base: &str) -> bool {
    list.iter().any(|g| glob::matches(g, base))
}
