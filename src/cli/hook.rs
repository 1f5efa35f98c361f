//! `architect hook <agent> <event>`: the program an agent CLI's hooks run.
//!
//! It reads the CLI's JSON on stdin, turns it into a signal ([`architect::agents`]),
//! sends it to the session it runs under (the socket and token in
//! `ARCHITECT_HOOK_SOCKET` / `ARCHITECT_HOOK_TOKEN`, set by the daemon for that session
//! only), waits for the answer and prints it in the CLI's own format. It answers within
//! [`ANSWER_TIMEOUT`]. When the session cannot be reached it fails closed: a tool request
//! is denied, anything else is let through unchanged (it decides nothing).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use architect::agents::signal::{HookAnswer, HookMessage, Signal};
use architect::session::hooks::{HOOK_SOCKET_ENV, HOOK_TOKEN_ENV};

/// Longest stdin read, in bytes.
const MAX_INPUT: u64 = 16 * 1024 * 1024;
/// How long to wait for the session's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the hook.
pub fn run(agent: &str, event: &str) -> Result<ExitCode> {
    let mut raw = Vec::new();
    std::io::stdin().take(MAX_INPUT).read_to_end(&mut raw)?;
    let tool_event = architect::agents::is_tool_event(agent, event);
    let input: serde_json::Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(e) if tool_event => {
            return refuse(agent, event, &format!("its input is not JSON ({e})"));
        }
        Err(_) => serde_json::Value::Null,
    };
    let signal = match architect::agents::translate(agent, event, &input) {
        Ok(s) => s,
        Err(e) if tool_event => return refuse(agent, event, &e),
        Err(e) => {
            eprintln!("architect hook: {e}");
            Signal::Other
        }
    };
    let is_tool = matches!(signal, Signal::ToolRequest { .. });
    let answer = match send(agent, event, signal) {
        Ok(a) => a,
        Err(e) if is_tool => HookAnswer::Deny {
            reason: format!("architect could not be reached to check this action ({e}); refused"),
        },
        Err(e) => {
            eprintln!("architect hook: {e}");
            HookAnswer::Ok
        }
    };
    let answer = match answer {
        HookAnswer::Refused { reason } if is_tool => HookAnswer::Deny {
            reason: format!("architect refused the hook ({reason})"),
        },
        other => other,
    };
    let (out, code) = architect::agents::render(agent, event, &answer);
    if !out.is_empty() {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
    }
    // What the CLI writes after the turn (its usage) follows on a second connection.
    if let Some(signal) = architect::agents::late(agent, event, &input) {
        if let Err(e) = send(agent, event, signal) {
            eprintln!("architect hook: {e}");
        }
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Prints a refusal of the tool request, for when the hook cannot do its job.
fn refuse(agent: &str, event: &str, why: &str) -> Result<ExitCode> {
    let answer = HookAnswer::Deny {
        reason: format!("architect could not check this action ({why}); refused"),
    };
    let (out, code) = architect::agents::render(agent, event, &answer);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn send(agent: &str, event: &str, signal: Signal) -> Result<HookAnswer, String> {
    let socket = std::env::var_os(HOOK_SOCKET_ENV)
        .ok_or_else(|| format!("{HOOK_SOCKET_ENV} is not set: not running under architect"))?;
    let token =
        std::env::var(HOOK_TOKEN_ENV).map_err(|_| format!("{HOOK_TOKEN_ENV} is not set"))?;
    let msg = HookMessage {
        token,
        agent: agent.to_string(),
        event: event.to_string(),
        signal,
    };
    let mut stream = UnixStream::connect(&socket).map_err(|e| {
        format!(
            "connecting to {}: {e}",
            std::path::Path::new(&socket).display()
        )
    })?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("sending: {e}"))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| format!("waiting for the answer: {e}"))?;
    serde_json::from_str(reply.trim()).map_err(|e| format!("unreadable answer {reply:?}: {e}"))
}
