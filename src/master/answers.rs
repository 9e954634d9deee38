//! Answers to registry changes, held back until every live worker serves the new
//! registry version: a `201` then means the very next request, on any worker, sees it.
//!
//! Pure bookkeeping over the worker table; the master sends what `take_ready` returns.

use nix::unistd::Pid;

use super::pool::Pool;
use crate::ipc::Answer;

#[derive(Default)]
pub struct HeldAnswers {
    held: Vec<Held>,
}

struct Held {
    worker: Pid,
    question: u64,
    answer: Answer,
    version: u64,
}

impl HeldAnswers {
    pub fn hold(&mut self, worker: Pid, question: u64, answer: Answer, version: u64) {
        self.held.push(Held {
            worker,
            question,
            answer,
            version,
        });
    }

    /// The answers whose version every worker still connected has acknowledged. A
    /// worker that exits stops counting: the one that replaces it is forked with the
    /// current registry.
    pub fn take_ready(&mut self, pool: &Pool) -> Vec<(Pid, u64, Answer)> {
        let served = |version: u64| {
            pool.iter()
                .filter(|w| w.channel.is_some())
                .all(|w| w.registry_version >= version)
        };
        let (ready, held): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| served(h.version));
        self.held = held;
        ready
            .into_iter()
            .map(|h| (h.worker, h.question, h.answer))
            .collect()
    }
}
