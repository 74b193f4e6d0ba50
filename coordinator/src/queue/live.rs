//! Live notification of stored events: the dispatcher publishes a deployment's last stored
//! seq after each write, and event-stream readers wait on it, then read what is new from
//! the store. Readers always read from the store, so a slow reader loses nothing and a
//! notification carries no data to get out of order.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Default)]
pub struct Live {
    channels: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes to a deployment's progress. Subscribe before reading the store, so a
    /// write between the read and the wait is still noticed.
    pub fn subscribe(&self, deployment: &str) -> watch::Receiver<u64> {
        let mut channels = self.lock();
        channels
            .entry(deployment.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Tells readers that events up to `seq` are stored. Forgets deployments nobody
    /// watches any more.
    pub fn publish(&self, deployment: &str, seq: u64) {
        let mut channels = self.lock();
        if let Some(tx) = channels.get(deployment) {
            if tx.receiver_count() == 0 {
                channels.remove(deployment);
            } else {
                tx.send_replace(seq);
            }
        }
    }

    /// Number of deployments with watchers (for tests and diagnostics).
    pub fn watched(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_after_subscribing_is_never_missed() {
        let live = Live::default();
        let mut rx = live.subscribe("d1");
        live.publish("d1", 3);
        assert!(rx.changed().await.is_ok());
        assert_eq!(*rx.borrow_and_update(), 3);
        drop(rx);
        live.publish("d1", 4);
        assert_eq!(live.watched(), 0, "unwatched deployments are forgotten");
        live.publish("nobody", 1);
        assert_eq!(live.watched(), 0);
    }
}
