//! The ready queue: tasks waiting for a session, highest priority first, FIFO within a
//! priority. One heap per target (a named session, a role, or any session), so finding
//! work for an idle session looks at three heap heads: O(log n) per add and per take, the
//! same with 100 or 100,000 tasks queued.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// Which sessions may run a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Exactly this session.
    Session(String),
    /// Any session with this role.
    Role(String),
    /// Any terminal session.
    Any,
    /// Any LLM provider session (tasks that name a `provider` or a `complexity`).
    Llm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    priority: u8,
    seq: u64,
    id: String,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: higher priority first, then the lower sequence number.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Priority queues by target. Removal is lazy (a removed id is skipped when it surfaces).
#[derive(Debug, Default)]
pub struct Queue {
    heaps: HashMap<Target, BinaryHeap<Entry>>,
    queued: HashSet<String>,
}

impl Queue {
    /// Adds a task. `seq` orders tasks of equal priority (lower first).
    pub fn push(&mut self, target: Target, priority: u8, seq: u64, id: String) {
        self.queued.insert(id.clone());
        self.heaps
            .entry(target)
            .or_default()
            .push(Entry { priority, seq, id });
    }

    /// Removes a task (lazily). Returns whether it was queued.
    pub fn remove(&mut self, id: &str) -> bool {
        self.queued.remove(id)
    }

    /// Whether a task is queued.
    #[must_use]
    pub fn contains(&self, id: &str) -> bool {
        self.queued.contains(id)
    }

    /// Number of queued tasks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    fn head(&mut self, target: &Target) -> Option<&Entry> {
        let heap = self.heaps.get_mut(target)?;
        while let Some(top) = heap.peek() {
            if self.queued.contains(&top.id) {
                break;
            }
            heap.pop();
        }
        heap.peek()
    }

    /// Takes the best task a session named `session` with role `role` may run: its own
    /// tasks, its role's, and those for any terminal session — or, for a provider
    /// session (`llm`), those for any provider session.
    pub fn take_for(&mut self, session: &str, role: Option<&str>, llm: bool) -> Option<String> {
        let mut targets = vec![Target::Session(session.to_string())];
        if let Some(r) = role {
            targets.push(Target::Role(r.to_string()));
        }
        targets.push(if llm { Target::Llm } else { Target::Any });
        // Priority first; at equal priority the narrowest target (this session, then its
        // role, then any), then FIFO. `targets` is listed narrowest first.
        let mut best: Option<(Target, Entry, usize)> = None;
        for (rank, t) in targets.into_iter().enumerate() {
            if let Some(e) = self.head(&t) {
                let better = best.as_ref().is_none_or(|(_, b, b_rank)| {
                    e.priority
                        .cmp(&b.priority)
                        .then_with(|| b_rank.cmp(&rank))
                        .then_with(|| b.seq.cmp(&e.seq))
                        .is_gt()
                });
                if better {
                    best = Some((t, e.clone(), rank));
                }
            }
        }
        let (target, entry, _) = best?;
        self.heaps.get_mut(&target).and_then(BinaryHeap::pop);
        self.queued.remove(&entry.id);
        Some(entry.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_then_fifo() {
        let mut q = Queue::default();
        q.push(Target::Any, 5, 1, "a".into());
        q.push(Target::Any, 9, 2, "b".into());
        q.push(Target::Any, 5, 3, "c".into());
        q.push(Target::Any, 9, 4, "d".into());
        let order: Vec<_> = std::iter::from_fn(|| q.take_for("s", None, false)).collect();
        assert_eq!(order, ["b", "d", "a", "c"]);
    }

    #[test]
    fn targets_are_respected_and_merged() {
        let mut q = Queue::default();
        q.push(Target::Session("s2".into()), 10, 1, "for-s2".into());
        q.push(Target::Role("r".into()), 5, 2, "for-r".into());
        q.push(Target::Any, 5, 3, "any".into());
        assert_eq!(q.take_for("s1", None, false).as_deref(), Some("any"));
        assert_eq!(q.take_for("s1", None, false), None);
        assert_eq!(q.take_for("s1", Some("r"), false).as_deref(), Some("for-r"));
        assert_eq!(
            q.take_for("s2", Some("r"), false).as_deref(),
            Some("for-s2")
        );
    }

    #[test]
    fn at_equal_priority_the_narrowest_target_goes_first() {
        let mut q = Queue::default();
        q.push(Target::Any, 5, 1, "any".into());
        q.push(Target::Role("r".into()), 5, 2, "role".into());
        q.push(Target::Session("s".into()), 5, 3, "mine".into());
        q.push(Target::Any, 6, 4, "urgent".into());
        let order: Vec<_> = std::iter::from_fn(|| q.take_for("s", Some("r"), false)).collect();
        assert_eq!(order, ["urgent", "mine", "role", "any"]);
    }

    #[test]
    fn removed_tasks_are_skipped() {
        let mut q = Queue::default();
        q.push(Target::Any, 5, 1, "a".into());
        q.push(Target::Any, 5, 2, "b".into());
        assert!(q.remove("a"));
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_for("s", None, false).as_deref(), Some("b"));
    }
}
