//! One integration test binary (the crate links once). Every test drives the real
//! `architect` binary, real PTYs and real files.

mod helper;

mod agents;
mod attach;
mod autonomy;
mod cli;
mod config_live;
mod core;
mod delivery;
mod extract;
mod failures;
mod fake_agent;
mod fleet;
mod hostile;
mod intake;
mod layers;
mod llm;
mod locks;
mod malformed;
mod metrics;
mod notify;
mod policy;
mod profiles;
mod record;
mod serve;
mod spool_flow;
mod sql_stats;
mod top;
mod worktrees;
