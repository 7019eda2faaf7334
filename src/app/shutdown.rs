//! One stop signal for every thread. The [`Trigger`] holds the only sender of a channel
//! that never carries a message; firing (or dropping) it disconnects the channel, which
//! every [`Shutdown`] clone sees at once, whether it waits on it alone or beside other
//! channels (`select!`). Nothing polls a flag.

use std::sync::Mutex;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

/// Fires the shutdown (first Ctrl-C, SIGTERM, or the owner going away); hands out the
/// watchers.
#[derive(Debug)]
pub struct Trigger {
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
}

/// Watches for the shutdown; cheap to clone, one per thread.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: Receiver<()>,
}

impl Default for Trigger {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Self {
            tx: Mutex::new(Some(tx)),
            rx,
        }
    }
}

impl Trigger {
    /// A watcher of this trigger.
    pub fn watch(&self) -> Shutdown {
        Shutdown {
            rx: self.rx.clone(),
        }
    }

    /// Signals every watcher; later calls do nothing.
    pub(crate) fn fire(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Shutdown {
    /// Whether the shutdown has been signalled.
    pub(crate) fn is_set(&self) -> bool {
        matches!(self.rx.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sleeps for `d` unless the shutdown comes first; true when it did.
    pub fn sleep(&self, d: Duration) -> bool {
        matches!(self.rx.recv_timeout(d), Err(RecvTimeoutError::Disconnected))
    }

    /// The channel to wait on beside others (it disconnects on shutdown).
    pub(crate) fn receiver(&self) -> &Receiver<()> {
        &self.rx
    }
}

/// Fires `trigger` on the first Ctrl-C / SIGTERM (streams finish their windows, files
/// close, websocket clients get a close frame); a second one ends the process at once
/// with `_exit(130)`, which skips the C++ static destructors that crashed while
/// libtorch, whisper.cpp and GStreamer threads were still running.
pub fn stop_on_signals(trigger: std::sync::Arc<Trigger>) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                tracing::warn!("cannot watch for Ctrl-C / SIGTERM: no signal runtime");
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    tracing::warn!("cannot watch for SIGTERM");
                    return;
                };
                for round in 0..2 {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    if round == 0 {
                        eprintln!(
                            "sentistream: stopping (finishing windows in flight; signal again to exit at once)"
                        );
                        trigger.fire();
                    } else {
                        eprintln!("sentistream: exiting at once");
                        // SAFETY: `_exit` ends the process without running any handler or
                        // destructor; nothing is touched afterwards.
                        unsafe { libc::_exit(130) };
                    }
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for Ctrl-C / SIGTERM: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_wakes_every_watcher_at_once() {
        let trigger = Trigger::default();
        let (watch, other) = (trigger.watch(), trigger.watch());
        assert!(!watch.is_set());
        let waiter = std::thread::spawn(move || other.sleep(Duration::from_secs(600)));
        trigger.fire();
        assert!(
            waiter.join().unwrap(),
            "the sleeper woke because of the shutdown"
        );
        assert!(watch.is_set());
        trigger.fire();
    }

    #[test]
    fn dropping_the_trigger_is_a_shutdown_and_an_unfired_one_waits() {
        let trigger = Trigger::default();
        let watch = trigger.watch();
        assert!(!watch.sleep(Duration::from_millis(1)));
        drop(trigger);
        assert!(watch.is_set());
    }
}
