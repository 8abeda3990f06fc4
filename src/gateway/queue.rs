//! A session's queue of frames: bounded, filled by the hub, drained by
//! the session's task. Lighter than a tokio channel, which allocates its
//! first block of 32 slots and its state up front (about 1.5 KiB a
//! session, measured with heaptrack under `loadgen --scenario fanout`);
//! this holds a frame only while one waits, so an idle session pays for
//! an empty queue and a `Notify`.
//!
//! Closing works as with a channel: when the hub drops its sender (the
//! session was too slow, or its token stopped working) the session reads
//! what is left, then `None`; when the session ends, the hub sees the
//! queue closed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::hub::Frame;

struct Shared {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    closed: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the state whole: keep going after a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        self.state().closed = true;
        self.ready.notify_one();
    }
}

/// A queue of at most `capacity` frames.
pub fn queue(capacity: usize) -> (FrameSender, FrameReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
        ready: Notify::new(),
    });
    (
        FrameSender {
            shared: shared.clone(),
            capacity,
        },
        FrameReceiver { shared },
    )
}

/// The hub's end.
pub struct FrameSender {
    shared: Arc<Shared>,
    capacity: usize,
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum NotQueued {
    Full,
    Closed,
}

impl FrameSender {
    pub fn try_send(&self, frame: Frame) -> Result<(), NotQueued> {
        {
            let mut state = self.shared.state();
            if state.closed {
                return Err(NotQueued::Closed);
            }
            if state.frames.len() >= self.capacity {
                return Err(NotQueued::Full);
            }
            state.frames.push_back(frame);
        }
        self.shared.ready.notify_one();
        Ok(())
    }

    /// True once the session ended (or the queue was closed).
    pub fn is_closed(&self) -> bool {
        self.shared.state().closed
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// The session's end.
pub struct FrameReceiver {
    shared: Arc<Shared>,
}

impl FrameReceiver {
    /// The next frame; `None` once the queue is closed and empty. Safe to
    /// cancel (in `select!`): a frame is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            {
                let mut state = self.shared.state();
                if let Some(frame) = state.frames.pop_front() {
                    return Some(frame);
                }
                if state.closed {
                    return None;
                }
            }
            // A notification sent since the check is kept as a permit, so
            // this cannot sleep through a frame queued in between.
            self.shared.ready.notified().await;
        }
    }

    /// The next frame if one waits.
    pub fn try_recv(&mut self) -> Option<Frame> {
        self.shared.state().frames.pop_front()
    }
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_arrive_in_order_and_a_closed_queue_drains_first() {
        let (sender, mut receiver) = queue(2);
        sender.try_send(Frame::from("a")).unwrap();
        sender.try_send(Frame::from("b")).unwrap();
        assert_eq!(sender.try_send(Frame::from("c")), Err(NotQueued::Full));
        drop(sender);
        assert_eq!(receiver.recv().await.as_deref(), Some("a"));
        assert_eq!(receiver.recv().await.as_deref(), Some("b"));
        assert_eq!(receiver.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_for_a_frame_and_the_hub_sees_it_leave() {
        let (sender, mut receiver) = queue(4);
        let waiting = tokio::spawn(async move {
            let frame = receiver.recv().await;
            (frame, receiver)
        });
        tokio::task::yield_now().await;
        sender.try_send(Frame::from("x")).unwrap();
        let (frame, receiver) = waiting.await.unwrap();
        assert_eq!(frame.as_deref(), Some("x"));
        assert!(!sender.is_closed());
        drop(receiver);
        assert!(sender.is_closed());
        assert_eq!(sender.try_send(Frame::from("y")), Err(NotQueued::Closed));
    }
}
