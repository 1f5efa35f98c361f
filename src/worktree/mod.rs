//! Git worktrees for sessions.

mod branch;

pub use branch::validate_branch;
