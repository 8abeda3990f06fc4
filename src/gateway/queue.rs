//! A session's queue of frames: bounded, filled by the hub, drained by
//! the session. Lighter than a tokio channel, which allocates its first
//! block of 32 slots and its state up front (about 1.5 KiB a session,
//! measured with heaptrack under `loadgen --scenario fanout`); this holds
//! a frame only while one waits, so an idle session pays for an empty
//! queue and the waker of the task that polls it.
//!
//! Closing works as with a channel: when the hub drops its sender (the
//! session was too slow, or its token stopped working) the session reads
//! what is left, then `None`; when the session ends, the hub sees the
//! queue closed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::hub::Frame;

struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    closed: bool,
    /// The session's task, when it waits for a frame.
    waiting: Option<Waker>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the state whole: keep going after a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        let waiting = {
            let mut state = self.state();
            state.closed = true;
            state.waiting.take()
        };
        // Woken outside the lock: the woken task may run at once.
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

/// A queue of at most `capacity` frames.
pub fn queue(capacity: usize) -> (FrameSender, FrameReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
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
        let waiting = {
            let mut state = self.shared.state();
            if state.closed {
                return Err(NotQueued::Closed);
            }
            if state.frames.len() >= self.capacity {
                return Err(NotQueued::Full);
            }
            state.frames.push_back(frame);
            state.waiting.take()
        };
        if let Some(waker) = waiting {
            waker.wake();
        }
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
    /// The next frame; `None` once the queue is closed and empty. When
    /// none waits, the task is woken by the next frame or the closing: the
    /// waker is stored under the same lock the sender queues under, so no
    /// frame can slip in between.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut state = self.shared.state();
        if let Some(frame) = state.frames.pop_front() {
            return Poll::Ready(Some(frame));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.waiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waiting => *waiting = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// [`Self::poll_recv`] as a future.
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
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
