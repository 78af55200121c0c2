//! Which shim events reach the handler: exactly-once exit bookkeeping per task generation,
//! the OOM mark, and [`Inner::publish`], which applies them.

use super::*;

/// Exactly-once bookkeeping for exits and OOM marks, per task *generation*.
///
/// A generation begins when `create` or `restore` takes a task id and ends when `delete` (or a
/// failed start) releases it; everything recorded for the id goes with it. So a later task with
/// the same id, whose init may get an old pid back, starts clean and its exit is delivered, and
/// the book never holds more than the tasks the executor knows.
#[derive(Default)]
pub(super) struct Book {
    /// Source of generation numbers (never reused within one executor).
    pub(super) next_generation: u64,
    /// The current generation of every task id the executor knows.
    pub(super) tasks: HashMap<String, Generation>,
}

/// What one task generation has delivered.
#[derive(Debug, Default)]
pub(super) struct Generation {
    pub(super) number: u64,
    /// The init pid of this generation, once known: an init exit with another pid belongs to an
    /// earlier generation (a late event of a previous shim) and is not this task's.
    init_pid: Option<u32>,
    /// (exec id or "", pid) of every exit already handed to the queue, oldest first.
    delivered: std::collections::VecDeque<(String, u32)>,
    /// An OOM event came since the last init exit.
    oom: bool,
}

/// What [`Book::admit_exit`] decided about an exit.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Deliver it; `oom` says whether an OOM event preceded this init exit.
    Deliver { oom: bool },
    /// Already delivered in this generation.
    Duplicate,
    /// It belongs to an earlier generation of the id, or to no generation at all.
    Stale,
}

impl Book {
    /// Starts a new generation of `id`, forgetting everything of the previous one.
    pub(super) fn begin(&mut self, id: &str) -> u64 {
        self.next_generation += 1;
        let number = self.next_generation;
        self.tasks.insert(
            id.to_owned(),
            Generation {
                number,
                ..Generation::default()
            },
        );
        number
    }

    /// Records the init pid of the current generation of `id`.
    pub(super) fn set_init_pid(&mut self, id: &str, pid: u32) {
        if let Some(g) = self.tasks.get_mut(id) {
            g.init_pid = Some(pid);
        }
    }

    /// Ends the generation `number` of `id` (a no-op if a newer one has begun).
    pub(super) fn end(&mut self, id: &str, number: Option<u64>) {
        if let Some(g) = self.tasks.get(id) {
            if number.is_none_or(|n| n == g.number) {
                self.tasks.remove(id);
            }
        }
    }

    pub(super) fn mark_oom(&mut self, id: &str) {
        if let Some(g) = self.tasks.get_mut(id) {
            g.oom = true;
        }
    }

    /// Decides whether an exit is delivered, recording it if so.
    ///
    /// Exit times are not compared with the generation's start: a clock stepped back would make
    /// a real exit look old, and a dropped exit is never noticed again.
    pub(super) fn admit_exit(&mut self, id: &str, exec_id: Option<&str>, pid: u32) -> Admit {
        let Some(g) = self.tasks.get_mut(id) else {
            return Admit::Stale;
        };
        if exec_id.is_none() && g.init_pid.is_some_and(|p| p != pid && pid != 0) {
            return Admit::Stale;
        }
        let key = (exec_id.unwrap_or_default().to_owned(), pid);
        if g.delivered.contains(&key) {
            return Admit::Duplicate;
        }
        if g.delivered.len() >= EXITS_PER_GENERATION {
            g.delivered.pop_front();
        }
        g.delivered.push_back(key);
        let oom = exec_id.is_none() && std::mem::take(&mut g.oom);
        Admit::Deliver { oom }
    }

    /// Number of entries held, for tests of boundedness.
    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.tasks.values().map(|g| 1 + g.delivered.len()).sum()
    }
}

impl Inner {
    /// Hands an event to the queue, applying the exactly-once and OOM rules.
    pub(crate) async fn publish(&self, mut event: TaskEvent) {
        let id = event.id().to_owned();
        let attached = lock(&self.tasks).contains_key(&id);
        let starting = !attached && lock(&self.starting).contains(&id);
        let init_exit = matches!(event, TaskEvent::Exited { exec_id: None, .. });
        if !(attached || starting) || (starting && init_exit) {
            // Unknown task, or the exit of one still starting: create reports that itself, and
            // once it registers the task it asks the shim for the state, so nothing is missed.
            tracing::debug!(task = %id, ?event, "event ignored");
            return;
        }
        {
            let mut book = lock(&self.book);
            match &mut event {
                TaskEvent::Oom { .. } => book.mark_oom(&id),
                TaskEvent::Exited {
                    exec_id, pid, exit, ..
                } => match book.admit_exit(&id, exec_id.as_deref(), *pid) {
                    Admit::Deliver { oom } => exit.oom_killed |= oom,
                    Admit::Duplicate => {
                        tracing::debug!(task = %id, pid, "duplicate exit ignored");
                        return;
                    }
                    Admit::Stale => {
                        tracing::debug!(task = %id, pid, "exit of an earlier task generation ignored");
                        return;
                    }
                },
                _ => {}
            }
        }
        tracing::debug!(task = %id, ?event, "task event");
        let handler = self.handler.clone();
        if let Err(e) = self
            .queue
            .append(id.clone(), async move { handler.handle(event).await })
            .await
        {
            tracing::warn!(task = %id, error = %e, "event dropped: queue closed");
        }
    }
}
