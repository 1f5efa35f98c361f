//! `architect sql` and `architect stats`.

use std::process::ExitCode;

use anyhow::Result;

use architect::spool::Spool;
use architect::sql::{self, Format};

pub fn sql(spool: &Spool, query: &str, format: Format) -> Result<ExitCode> {
    let result = sql::run(&spool.dir("log"), query)?;
    print!("{}", result.render(format)?);
    Ok(ExitCode::SUCCESS)
}

pub fn stats(spool: &Spool, json: bool) -> Result<ExitCode> {
    let result = sql::run(&spool.dir("log"), sql::STATS_SQL)?;
    if json {
        print!("{}", result.render(Format::Json)?);
    } else if result.rows.is_empty() {
        println!("no finished tasks in the log yet");
    } else {
        print!("{}", result.render(Format::Table)?);
    }
    Ok(ExitCode::SUCCESS)
}
