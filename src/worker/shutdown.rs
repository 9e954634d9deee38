//! The one shutdown signal of a worker: every reason a worker stops (the master's
//! `Stop`, the master gone, SIGTERM, `max_requests`, accepts failing) goes through it,
//! mini-redis style, and every connection waits on it.
//!
//! Owns only a flag and the wakers of those waiting. Built for the worker's one thread
//! and for being polled often: a connection polls it each time the connection is woken,
//! so a wait that is already registered costs a flag read and a waker comparison, where
//! a `tokio::sync` channel took a lock each poll.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use log::info;

#[derive(Clone, Default)]
pub struct Shutdown(Rc<Signal>);

#[derive(Default)]
struct Signal {
    triggered: Cell<bool>,
    waiting: RefCell<Waiting>,
}

/// The wakers of the waits in progress, each in a slot a wait keeps until it ends.
#[derive(Default)]
struct Waiting {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self, why: &str) {
        if self.0.triggered.replace(true) {
            return;
        }
        info!("draining: {why}");
        let wakers: Vec<Waker> = self
            .0
            .waiting
            .borrow_mut()
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.triggered.get()
    }

    /// Resolves once the shutdown has been triggered.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            signal: &self.0,
            slot: None,
        }
    }
}

pub struct Wait<'a> {
    signal: &'a Signal,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.triggered.get() {
            return Poll::Ready(());
        }
        let mut waiting = self.signal.waiting.borrow_mut();
        match self.slot {
            Some(slot) => {
                let kept = &mut waiting.slots[slot];
                if !kept
                    .as_ref()
                    .is_some_and(|waker| waker.will_wake(cx.waker()))
                {
                    // The old waker is dropped after the borrow ends: dropping it could
                    // drop a future holding another `Wait`, whose `drop` borrows.
                    let old = kept.replace(cx.waker().clone());
                    drop(waiting);
                    drop(old);
                }
            }
            None => {
                let waker = Some(cx.waker().clone());
                let slot = match waiting.free.pop() {
                    Some(slot) => {
                        waiting.slots[slot] = waker;
                        slot
                    }
                    None => {
                        waiting.slots.push(waker);
                        waiting.slots.len() - 1
                    }
                };
                drop(waiting);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut waiting = self.signal.waiting.borrow_mut();
            waiting.slots[slot] = None;
            waiting.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_wait_is_woken_once_by_the_trigger_and_a_dropped_one_frees_its_slot() {
        let shutdown = Shutdown::new();
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut waits: Vec<_> = (0..3).map(|_| Box::pin(shutdown.wait())).collect();
        for wait in &mut waits {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(wait.as_mut().poll(&mut cx).is_pending(), "polled again");
        }
        drop(waits.pop());
        let mut later = Box::pin(shutdown.wait());
        assert!(later.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            shutdown.0.waiting.borrow().slots.len(),
            3,
            "the freed slot reused"
        );

        shutdown.trigger("test");
        assert_eq!(woken.0.load(Ordering::SeqCst), 3);
        assert!(shutdown.is_triggered());
        for wait in &mut waits {
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        }
        assert!(later.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(shutdown.wait()).as_mut().poll(&mut cx).is_ready());
    }
}
