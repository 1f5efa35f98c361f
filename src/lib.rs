#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod agents;
pub mod attach;
pub mod backoff;
pub mod config;
pub mod daemon;
pub mod durable;
pub mod error;
pub mod extract;
pub mod fleet;
pub mod llm;
pub mod locks;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod profile;
pub mod record;
pub mod redact;
pub mod runtime_dir;
pub mod scheduler;
pub mod session;
pub mod spool;
pub mod sql;
pub mod types;
pub mod worktree;

pub use error::{Error, Result};
