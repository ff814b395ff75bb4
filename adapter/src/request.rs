//! Requests to other nodes: response routing by request id, the wait for every live node, and
//! [`InFlight`], the one skeleton every request kind goes through (registered, published,
//! collected until answered, a node dead or the timeout, observed in the metrics).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::{
    membership::Membership,
    metrics::Metrics,
    wire::{Body, RequestId},
};

/// A request that was published and waits for its answers.
pub(crate) struct InFlight {
    pub(crate) kind: &'static str,
    pub(crate) started: Instant,
    pub(crate) guard: PendingGuard,
    /// The nodes expected to answer.
    pub(crate) waiting: HashSet<String>,
    pub(crate) members: Arc<Membership>,
    pub(crate) metrics: Metrics,
}

impl InFlight {
    /// Collects answers (see [`collect`]) and records the request in the metrics; a timeout is
    /// counted and logged with the nodes that did not answer. Returns those nodes.
    pub(crate) async fn finish(
        mut self,
        timeout: Duration,
        on_response: impl FnMut(&str, Body) -> bool,
    ) -> Vec<String> {
        let waiting = std::mem::take(&mut self.waiting);
        let missing = collect(
            &mut self.guard,
            &self.members,
            waiting,
            timeout,
            on_response,
        )
        .await;
        observe(&self.metrics, self.kind, self.started, &missing);
        missing
    }
}

/// Records one request of `kind` that took since `started`; a timeout (nodes `missing`) is
/// counted and logged with those nodes.
pub(crate) fn observe(m: &Metrics, kind: &'static str, started: Instant, missing: &[String]) {
    m.requests.with_label_values(&[kind]).inc();
    m.request_duration
        .with_label_values(&[kind])
        .observe(started.elapsed().as_secs_f64());
    if !missing.is_empty() {
        m.request_timeouts.with_label_values(&[kind]).inc();
        tracing::warn!(kind, ?missing, "nodes did not answer in time");
    }
}

/// Routes responses to the request waiting for them.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    map: Mutex<HashMap<RequestId, mpsc::UnboundedSender<(String, Body)>>>,
}

/// Removes the request's route when the waiting side is dropped (finished, timed out or
/// cancelled), so no state is left behind.
pub(crate) struct PendingGuard {
    pending: Arc<Pending>,
    req: RequestId,
    pub(crate) rx: mpsc::UnboundedReceiver<(String, Body)>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.req);
    }
}

impl Pending {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<RequestId, mpsc::UnboundedSender<(String, Body)>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `req`; responses are readable from the guard until it is dropped.
    pub(crate) fn register(self: &Arc<Self>, req: RequestId) -> PendingGuard {
        // Unbounded, but bounded in practice by the number of nodes and acked sockets the
        // request was sent to; a full channel here would mean dropping answers.
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(req, tx);
        PendingGuard {
            pending: self.clone(),
            req,
            rx,
        }
    }

    /// Hands a response to its request. Returns false if nobody waits for it (late answer).
    pub(crate) fn dispatch(&self, req: RequestId, origin: &str, body: Body) -> bool {
        match self.lock().get(&req) {
            Some(tx) => tx.send((origin.to_owned(), body)).is_ok(),
            None => false,
        }
    }

    /// Number of requests in flight.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Waits for responses until every node of `waiting` is done, a node dies, or `timeout`.
/// `on_response` gets each response and says whether that node has now answered in full.
/// Returns the nodes that did not finish answering.
pub(crate) async fn collect(
    guard: &mut PendingGuard,
    members: &Membership,
    mut waiting: HashSet<String>,
    timeout: Duration,
    mut on_response: impl FnMut(&str, Body) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = members.subscribe();
    // A node may have died or left between the publish and now.
    waiting.retain(|n| members.is_alive(n));
    while !waiting.is_empty() {
        tokio::select! {
            msg = guard.rx.recv() => match msg {
                Some((node, body)) => {
                    if on_response(&node, body) {
                        waiting.remove(&node);
                    }
                }
                None => break,
            },
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                // A node that died or left will never answer: stop waiting for it.
                waiting.retain(|n| members.is_alive(n));
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let mut missing: Vec<String> = waiting.into_iter().collect();
    missing.sort();
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collect_stops_at_answers_and_cleans_up() {
        let pending = Arc::new(Pending::default());
        let members = Membership::new(Duration::from_secs(5));
        members.seen("b", None, None);
        members.seen("c", None, None);
        let mut guard = pending.register(1);
        assert!(pending.dispatch(1, "b", Body::Leave));
        assert!(pending.dispatch(1, "c", Body::Leave));
        let waiting = HashSet::from(["b".to_owned(), "c".to_owned()]);
        let missing = collect(
            &mut guard,
            &members,
            waiting,
            Duration::from_secs(5),
            |_, _| true,
        )
        .await;
        assert!(missing.is_empty());
        drop(guard);
        assert_eq!(pending.len(), 0);
        assert!(!pending.dispatch(1, "b", Body::Leave));
    }

    #[tokio::test]
    async fn collect_reports_silent_nodes_and_drops_dead_ones() {
        let pending = Arc::new(Pending::default());
        let members = Membership::new(Duration::from_secs(5));
        members.seen("b", None, None);
        members.seen("c", None, None);
        let mut guard = pending.register(2);
        let waiting = HashSet::from(["b".to_owned(), "c".to_owned()]);
        members.remove("c");
        let missing = collect(
            &mut guard,
            &members,
            waiting,
            Duration::from_millis(50),
            |_, _| true,
        )
        .await;
        assert_eq!(missing, vec!["b".to_owned()]);
    }
}
