//! A consumer's pull requests, guarded against an end that never comes.
//!
//! async-nats ends a pull request (`batch()`) when nats-server says it expired (a 408
//! status), or, when that status never arrives, only seconds after the expiry. nats-server
//! 2.9 sometimes sends none: a delivery lane, idle for a moment between bursts, then sits
//! on such a request while its posts queue, and every post of that lane waits out the
//! client's timeout instead of going at once. So a request still open `GRACE` after
//! its expiry is set aside as overdue, and the caller may make a new one. The overdue one is
//! still read, and read first, until it ends: a message the server delivers to it late is
//! not lost (dropping it would leave the message to `ack_wait`), and order holds, because
//! one connection delivers both requests' messages in stream order and the older
//! request's are always taken first.

use futures::{Stream, StreamExt};
use std::time::Duration;
use tokio::time::Instant;

/// How long past its expiry a request may stay open before it is set aside: the 408 comes
/// at once on loopback; setting aside early only costs one more pull request.
pub(crate) const GRACE: Duration = Duration::from_millis(200);

/// The open pull requests of one consumer: at most a current one and an overdue one.
pub(crate) struct Pulls<S> {
    current: Option<S>,
    /// When the current request should have ended.
    due: Instant,
    overdue: Option<S>,
}

impl<S> Default for Pulls<S> {
    fn default() -> Self {
        Pulls {
            current: None,
            due: Instant::now(),
            overdue: None,
        }
    }
}

impl<T, E, S> Pulls<S>
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    /// Whether a new request may be made: no current one is open (an overdue one may be).
    pub(crate) fn can_pull(&self) -> bool {
        self.current.is_none()
    }

    /// Whether any request is open, overdue ones included: messages may still arrive.
    pub(crate) fn is_open(&self) -> bool {
        self.current.is_some() || self.overdue.is_some()
    }

    /// A new request that expires after `expires`.
    pub(crate) fn start(&mut self, request: S, expires: Duration) {
        self.current = Some(request);
        self.due = Instant::now() + expires + GRACE;
    }

    /// The next message, from the overdue request first. `None` when the current request
    /// ended (or was set aside as overdue); `Some(Err)` when it failed, and it is then
    /// closed. Pending forever while nothing is open.
    pub(crate) async fn next(&mut self) -> Option<Result<T, E>> {
        loop {
            // Only one request is set aside at a time: a second overdue one is waited on
            // until async-nats ends it.
            let set_aside = self.overdue.is_none() && self.current.is_some();
            let due = self.due;
            tokio::select! {
                biased;
                item = next_of(&mut self.overdue) => match item {
                    Some(Ok(message)) => return Some(Ok(message)),
                    // Ended or failed: nothing more comes to it.
                    Some(Err(_)) | None => self.overdue = None,
                },
                item = next_of(&mut self.current) => {
                    if !matches!(item, Some(Ok(_))) {
                        self.current = None;
                    }
                    return item;
                }
                _ = tokio::time::sleep_until(due), if set_aside => {
                    tracing::debug!("a pull request outlived its expiry; pulling again beside it");
                    metrics::counter!(crate::io::metrics::PULLS_OVERDUE).increment(1);
                    self.overdue = self.current.take();
                    return None;
                }
            }
        }
    }
}

/// The next item of an open request; pending forever when there is none.
async fn next_of<S: Stream + Unpin>(request: &mut Option<S>) -> Option<S::Item> {
    match request.as_mut() {
        Some(request) => request.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::stream;

    type Sender = mpsc::UnboundedSender<Result<u64, String>>;

    /// A request the test delivers to by hand; it ends when its sender is dropped.
    fn request() -> (Sender, mpsc::UnboundedReceiver<Result<u64, String>>) {
        mpsc::unbounded()
    }

    /// A request set aside as overdue (its end never came) and a new one made beside it.
    async fn overdue_and_new() -> (
        Pulls<mpsc::UnboundedReceiver<Result<u64, String>>>,
        Sender,
        Sender,
    ) {
        let (old_tx, old) = request();
        let (new_tx, new) = request();
        let mut pulls = Pulls::default();
        pulls.start(old, Duration::from_secs(1));
        assert_eq!(pulls.next().await, None, "set aside");
        pulls.start(new, Duration::from_secs(1));
        (pulls, old_tx, new_tx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_ends_in_time_is_read_to_its_end() {
        let mut pulls = Pulls::default();
        pulls.start(
            stream::iter([Ok::<u64, String>(1), Ok(2)]),
            Duration::from_secs(1),
        );
        assert!(!pulls.can_pull());
        assert_eq!(pulls.next().await, Some(Ok(1)));
        assert_eq!(pulls.next().await, Some(Ok(2)));
        assert_eq!(pulls.next().await, None);
        assert!(pulls.can_pull() && !pulls.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_request_is_closed() {
        let mut pulls = Pulls::default();
        pulls.start(
            stream::iter([Err::<u64, _>("409".to_owned())]),
            Duration::from_secs(1),
        );
        assert_eq!(pulls.next().await, Some(Err("409".to_owned())));
        assert!(pulls.can_pull() && !pulls.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_end_never_comes_is_set_aside_after_its_expiry_and_grace() {
        let (_old_tx, old) = request();
        let mut pulls = Pulls::default();
        let started = Instant::now();
        pulls.start(old, Duration::from_secs(1));
        assert_eq!(pulls.next().await, None, "set aside");
        assert_eq!(started.elapsed(), Duration::from_secs(1) + GRACE);
        assert!(pulls.can_pull(), "a new request may be made");
        assert!(pulls.is_open(), "the overdue one is still read");
    }

    #[tokio::test(start_paused = true)]
    async fn the_overdue_request_is_read_first_and_until_it_ends() {
        let (mut pulls, old_tx, new_tx) = overdue_and_new().await;
        // The server delivered 7 to the old request late, then 8 to the new one: both are
        // queued when read, and stream order holds.
        old_tx.unbounded_send(Ok(7)).expect("old");
        new_tx.unbounded_send(Ok(8)).expect("new");
        assert_eq!(pulls.next().await, Some(Ok(7)));
        assert_eq!(pulls.next().await, Some(Ok(8)));
        // The old one ends (async-nats's own timer); the new one goes on.
        drop(old_tx);
        new_tx.unbounded_send(Ok(9)).expect("new");
        assert_eq!(pulls.next().await, Some(Ok(9)));
        assert!(!pulls.can_pull());
        drop(new_tx);
        assert_eq!(pulls.next().await, None);
        assert!(!pulls.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_request_is_overdue_at_a_time() {
        let (mut pulls, _old_tx, new_tx) = overdue_and_new().await;
        // The new one outlives its expiry too while the old is still open: no third
        // request; the new one is read until it ends.
        let waited = tokio::time::timeout(Duration::from_secs(10), pulls.next()).await;
        assert!(waited.is_err(), "nothing came and nothing was set aside");
        assert!(!pulls.can_pull());
        new_tx.unbounded_send(Ok(3)).expect("new");
        assert_eq!(pulls.next().await, Some(Ok(3)));
    }
}
