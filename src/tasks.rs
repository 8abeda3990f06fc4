//! Everything the daemon runs besides its HTTP workers: the background
//! loops, each relay attempt, the cluster publisher and the cluster
//! listener's thread. All of them are started through `Tasks` and stop
//! under its one cancellation token, so a stopped daemon leaves nothing
//! running (tests start and stop many daemons in one process).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The daemon's tasks and threads, and the token that stops them.
#[derive(Clone, Default)]
pub struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// Runs `task` until it ends or the daemon stops, whichever is first. A
    /// stopped task is dropped at its next await: whatever it held in the
    /// database (a relay lease, say) is left as a crash would leave it.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            stop.run_until_cancelled(task).await;
        });
    }

    /// Runs `work` on a thread named `name`, for blocking work. It is handed
    /// the stop token and must return soon after the token is cancelled.
    pub fn spawn_thread<F>(&self, name: &str, work: F) -> std::io::Result<()>
    where
        F: FnOnce(CancellationToken) + Send + 'static,
    {
        let stop = self.stop.clone();
        // Counted as a task until the thread returns.
        let running = self.tracker.token();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                work(stop);
                drop(running);
            })
            .map(drop)
    }

    /// True once the daemon is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Tasks and threads still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Stops everything and waits up to `within` for it to end. False when
    /// something was still running then.
    pub async fn stop(&self, within: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_tasks_and_threads() {
        let tasks = Tasks::default();
        tasks.spawn(std::future::pending());
        tasks
            .spawn_thread("homing-test", |stop| {
                while !stop.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap();
        assert_eq!(tasks.running(), 2);
        assert!(tasks.stop(Duration::from_secs(5)).await);
        assert_eq!(tasks.running(), 0);
        assert!(tasks.stopping());
    }

    #[tokio::test]
    async fn a_thread_that_ignores_the_token_is_reported() {
        let tasks = Tasks::default();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        tasks
            .spawn_thread("homing-test", move |_| {
                let _ = wait.recv();
            })
            .unwrap();
        assert!(!tasks.stop(Duration::from_millis(50)).await);
        assert_eq!(tasks.running(), 1);
        release.send(()).unwrap();
        assert!(tasks.stop(Duration::from_secs(5)).await);
    }
}
