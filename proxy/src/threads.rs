//! Session threads. Each runs a single-threaded tokio runtime, and a session
//! runs on one of them from its first byte to its end, with both of its
//! sockets registered there. A session's work is a chain of short steps
//! (read a frame, judge it, write it on): on a work-stealing runtime each
//! readiness event may wake another worker, and those wake-ups cost more
//! than the steps. On 2 cores, `pgbench -S -c 8` with recording off: about
//! 21–24 µs of gateway CPU per transaction (simple protocol) with two
//! workers of either kind, 18.7 µs on one session thread, which finds
//! several sessions ready per wake-up (hence the default of half the CPUs,
//! `[listen] threads`). Sessions are dealt round-robin; the listener, the
//! admin API, the audit writer and the review hub stay where they are.

use std::io;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

pub(crate) struct SessionThreads {
    threads: Vec<SessionThread>,
    next: usize,
}

struct SessionThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl SessionThreads {
    /// Starts `count` threads (at least one).
    pub(crate) fn start(count: usize) -> io::Result<SessionThreads> {
        let mut threads = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let join = std::thread::Builder::new()
                .name(format!("hoop-session-{index}"))
                // The runtime runs its tasks while this blocks; when it
                // returns, dropping the runtime cancels what is left. It is
                // the thread's one runtime for life, so the audit writer
                // may hand it all of a commit's answers for its sessions at
                // once.
                .spawn(move || {
                    runtime.block_on(async move {
                        hoop_audit::answers::install();
                        hoop_audit::keeper::start();
                        drop(stopped.await)
                    })
                })?;
            threads.push(SessionThread {
                handle,
                stop: Some(stop),
                join: Some(join),
            });
        }
        Ok(SessionThreads { threads, next: 0 })
    }

    /// The runtime of the thread whose turn it is.
    pub(crate) fn next(&mut self) -> &Handle {
        let thread = &self.threads[self.next % self.threads.len()];
        self.next = self.next.wrapping_add(1);
        &thread.handle
    }
}

impl Drop for SessionThreads {
    fn drop(&mut self) {
        for thread in &mut self.threads {
            if let Some(stop) = thread.stop.take() {
                let _ = stop.send(());
            }
        }
        for thread in &mut self.threads {
            if let Some(join) = thread.join.take() {
                let _ = join.join();
            }
        }
    }
}
