//! Answering a commit's callers with one hand-off per caller thread.
//!
//! A caller waits for its record on a oneshot. Completing it from the
//! writer's thread wakes the caller's task across threads: on a
//! current-thread runtime (the gateway's session threads) that is a push
//! onto the runtime's injection queue and a write to its eventfd, for every
//! caller. A thread that runs one current-thread runtime for its whole life
//! may [`install`](crate::answers::install) an answer home on it instead: a
//! task there to which the writer hands all of a commit's answers for that
//! thread in one message, and which completes their oneshots locally.
//! Callers on other threads are answered directly.
//!
//! `pgbench -S -c 8` through the gateway (one session thread, every
//! statement recorded): the writer's eventfd writes went from about one per
//! statement to about one per commit.

use std::cell::RefCell;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::error::Result;

/// A commit's answers for the callers of one thread.
type Answers = Vec<(oneshot::Sender<Result<u64>>, Result<u64>)>;

/// Where the answers for one thread's callers go.
#[derive(Debug)]
pub(crate) struct Home {
    answers: mpsc::UnboundedSender<Answers>,
}

thread_local! {
    static HOME: RefCell<Option<Arc<Home>>> = const { RefCell::new(None) };
}

/// Starts this thread's answer home on the current runtime. Only for a
/// thread that runs that one current-thread runtime until it ends (the
/// home's task must run whenever the thread's callers wait); must be
/// called from within it.
pub fn install() {
    let (answers, mut arrived) = mpsc::unbounded_channel::<Answers>();
    tokio::spawn(async move {
        while let Some(answers) = arrived.recv().await {
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
    });
    HOME.with(|home| *home.borrow_mut() = Some(Arc::new(Home { answers })));
}

/// This thread's answer home, if it has one.
pub(crate) fn here() -> Option<Arc<Home>> {
    HOME.with(|home| home.borrow().clone())
}

/// Answers `answers`: those with a home in one message per home, the rest
/// (and all of a home that is gone) directly.
pub(crate) fn deliver(answers: impl IntoIterator<Item = Answer>) {
    let mut by_home: Vec<(Arc<Home>, Answers)> = Vec::new();
    for Answer {
        reply,
        home,
        result,
    } in answers
    {
        let Some(home) = home else {
            let _ = reply.send(result);
            continue;
        };
        match by_home.iter_mut().find(|(h, _)| Arc::ptr_eq(h, &home)) {
            Some((_, answers)) => answers.push((reply, result)),
            None => by_home.push((home, vec![(reply, result)])),
        }
    }
    for (home, answers) in by_home {
        if let Err(mpsc::error::SendError(answers)) = home.answers.send(answers) {
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
    }
}

/// One waiting caller's answer.
pub(crate) struct Answer {
    pub reply: oneshot::Sender<Result<u64>>,
    pub home: Option<Arc<Home>>,
    pub result: Result<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AuditError;

    fn waiting(
        home: Option<Arc<Home>>,
        result: Result<u64>,
    ) -> (Answer, oneshot::Receiver<Result<u64>>) {
        let (reply, answer) = oneshot::channel();
        (
            Answer {
                reply,
                home,
                result,
            },
            answer,
        )
    }

    #[test]
    fn a_threads_answers_go_to_its_home_in_one_message_and_the_rest_directly() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            install();
            let home = here().expect("installed");
            let (a, mut a_answer) = waiting(Some(home.clone()), Ok(1));
            let (b, b_answer) = waiting(Some(home.clone()), Err(AuditError::Closed));
            let (c, mut c_answer) = waiting(None, Ok(3));
            // From another thread, as the writer answers.
            std::thread::spawn(move || deliver([a, b, c]))
                .join()
                .expect("writer thread");
            // Direct: there already. Through the home: once its task ran
            // on this thread (it has not yet: nothing yielded).
            assert!(matches!(c_answer.try_recv(), Ok(Ok(3))), "direct");
            assert!(
                matches!(
                    a_answer.try_recv(),
                    Err(oneshot::error::TryRecvError::Empty)
                ),
                "through the home"
            );
            assert!(matches!(a_answer.await, Ok(Ok(1))));
            assert!(matches!(b_answer.await, Ok(Err(AuditError::Closed))));
        });
    }

    #[test]
    fn answers_for_a_home_that_is_gone_are_delivered_directly() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let home = runtime.block_on(async {
            install();
            here().expect("installed")
        });
        // The runtime and with it the home's task end.
        drop(runtime);
        let (a, mut a_answer) = waiting(Some(home), Ok(7));
        deliver([a]);
        assert!(
            matches!(a_answer.try_recv(), Ok(Ok(7))),
            "answered directly"
        );
    }

    #[test]
    fn a_thread_without_a_home_has_none() {
        std::thread::spawn(|| assert!(here().is_none()))
            .join()
            .expect("thread");
    }
}
