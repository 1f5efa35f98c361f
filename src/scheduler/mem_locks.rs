//! An in-memory lock table: the reference implementation of [`Locks`] for tests and
//! simulations.

use super::Locks;
use crate::locks::{Conflict, Resource};

/// Who holds a lock in a [`MemLocks`] table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldBy {
    /// A task of the scheduler (taken through [`Locks::try_acquire`]).
    Task(String),
    /// A holder outside the scheduler (`architect lock acquire`, another process), by a
    /// number its user picks: taken with [`MemLocks::take`], dropped with
    /// [`MemLocks::release_by`] or [`MemLocks::retain`].
    Outside(u32),
}

/// An in-memory [`Locks`]: the reference implementation for tests and simulations (the
/// daemon's takes `flock`s under `spool/locks/`).
///
/// The conflict rule is the daemon's ([`crate::locks`]): a request is refused when one of its resources
/// overlaps ([`Resource::overlaps`]: the same branch, or a path equal to, inside or
/// containing the other) one that is held, whoever holds it; otherwise all of them are
/// taken. The refusal names the first requested resource that overlaps, with no holder
/// (the table keeps no holder files). Resources of one request are not compared with
/// each other, and [`Locks::held_resources`] gives them as requested.
///
/// It has no clock: [`Locks::release`] reports [`MemLocks::release_ms`] as the time the
/// locks were held.
#[derive(Debug, Clone, Default)]
pub struct MemLocks {
    held: Vec<(Resource, HeldBy)>,
    /// What [`Locks::release`] reports as the time the locks were held (ms).
    pub release_ms: u64,
}

/// Proof of a task's locks in a [`MemLocks`] table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemHeld {
    /// The task holding them.
    pub task: String,
    /// The resources, as requested.
    pub resources: Vec<Resource>,
}

impl MemLocks {
    /// Every lock held, with its holder, in the order taken.
    #[must_use]
    pub fn held(&self) -> &[(Resource, HeldBy)] {
        &self.held
    }

    /// Takes every resource in `resources` for `by`, all or nothing.
    ///
    /// # Errors
    /// The first requested resource that overlaps a held one, when there is one: nothing
    /// is taken.
    pub fn take(&mut self, by: &HeldBy, resources: &[Resource]) -> Result<(), Resource> {
        if let Some(r) = resources
            .iter()
            .find(|r| self.held.iter().any(|(h, _)| h.overlaps(r)))
        {
            return Err(r.clone());
        }
        self.held
            .extend(resources.iter().map(|r| (r.clone(), by.clone())));
        Ok(())
    }

    /// Drops every lock `by` holds.
    pub fn release_by(&mut self, by: &HeldBy) {
        self.held.retain(|(_, h)| h != by);
    }

    /// Keeps only the locks for which `keep` is true (a crash takes the daemon's tasks'
    /// locks with it, for example).
    pub fn retain(&mut self, mut keep: impl FnMut(&Resource, &HeldBy) -> bool) {
        self.held.retain(|(r, h)| keep(r, h));
    }
}

impl Locks for MemLocks {
    type Held = MemHeld;

    fn try_acquire(
        &mut self,
        task: &str,
        _session: &str,
        resources: &[Resource],
    ) -> Result<Result<Self::Held, Conflict>, String> {
        let taken = self.take(&HeldBy::Task(task.to_string()), resources);
        Ok(match taken {
            Ok(()) => Ok(MemHeld {
                task: task.to_string(),
                resources: resources.to_vec(),
            }),
            Err(resource) => Err(Conflict {
                resource,
                holder: None,
            }),
        })
    }

    fn held_resources(&self, held: &Self::Held) -> Vec<Resource> {
        held.resources.clone()
    }

    fn release(&mut self, held: Self::Held) -> u64 {
        self.release_by(&HeldBy::Task(held.task));
        self.release_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Resource {
        Resource::Path(p.into())
    }

    #[test]
    fn overlapping_resources_conflict_and_a_refused_request_takes_nothing() {
        let mut t = MemLocks::default();
        let a = t.try_acquire("a", "s1", &[path("src")]).unwrap().unwrap();
        let refused = t
            .try_acquire("b", "s2", &[path("docs"), path("src/a.rs")])
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.resource, path("src/a.rs"), "the requested resource");
        assert_eq!(t.held().len(), 1, "docs was not taken");
        let branch = [Resource::Branch("main".into())];
        assert!(t.take(&HeldBy::Outside(1), &branch).is_ok());
        assert_eq!(t.take(&HeldBy::Outside(2), &branch), Err(branch[0].clone()));
        assert_eq!(t.release(a), 0);
        t.release_by(&HeldBy::Outside(1));
        assert!(t.held().is_empty());
    }
}
