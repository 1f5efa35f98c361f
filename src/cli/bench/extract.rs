//! `architect bench --extract`: the extraction engine's speed, in lines per second on
//! one core, with the built-in patterns (`config/extract.toml`) over a synthetic
//! transcript corpus ([`architect::extract::corpus`]): mostly ordinary build and agent
//! output, `MATCHING_PER_MILLE` ‰ lines that the patterns find.
//!
//! One thread, in this process: the corpus is built first (not timed), then
//! [`Extractor::extract`] runs over it `RUNS` times; the best run is the figure (the
//! others show the spread on a shared machine). Matches are checked: every matching
//! line of the corpus must be found.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};

use architect::extract::{builtin, corpus::corpus, Extractor};

/// Matching lines per thousand (4%: a busy agent transcript with test runs and errors).
const MATCHING_PER_MILLE: u32 = 40;
/// Timed runs over the corpus.
const RUNS: usize = 3;

pub(super) fn run(lines: usize, json: bool) -> Result<ExitCode> {
    if lines == 0 {
        bail!("--lines must be at least 1");
    }
    let x: std::sync::Arc<Extractor> = builtin();
    let t = Instant::now();
    let (text, matching_lines) = corpus(lines, MATCHING_PER_MILLE, 0x5eed);
    let mib = text.len() as f64 / (1024.0 * 1024.0);
    println!(
        "extraction: {} patterns; corpus of {lines} lines ({mib:.1} MiB, {matching_lines} matching lines) built in {:.2} s",
        x.specs().count(),
        t.elapsed().as_secs_f64()
    );
    let mut secs = Vec::with_capacity(RUNS);
    let mut found = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        found = x.extract(&text);
        secs.push(t.elapsed().as_secs_f64());
    }
    let mut lines_found: Vec<u64> = found.iter().map(|e| e.line).collect();
    lines_found.dedup();
    if lines_found.len() as u64 != matching_lines {
        bail!(
            "found matches on {} lines, the corpus has {matching_lines} matching lines",
            lines_found.len()
        );
    }
    let best = secs.iter().copied().fold(f64::INFINITY, f64::min);
    let rate = lines as f64 / best;
    let runs: Vec<String> = secs.iter().map(|s| format!("{:.3} s", s)).collect();
    println!(
        "  {:.2} M lines/s on one core ({:.0} MiB/s); best of {RUNS} runs: {}",
        rate / 1e6,
        mib / best,
        runs.join(", ")
    );
    let mut by_category = std::collections::BTreeMap::<&str, u64>::new();
    for e in &found {
        *by_category.entry(e.category.as_str()).or_default() += 1;
    }
    let cats: Vec<String> = by_category
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "  {} matches on {} lines ({})",
        found.len(),
        lines_found.len(),
        cats.join(", ")
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "extract": {
                    "patterns": x.specs().count(),
                    "lines": lines,
                    "bytes": text.len(),
                    "matching_lines": matching_lines,
                    "matches": found.len(),
                    "seconds": secs,
                    "lines_per_s": rate,
                }
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}
