//! Sending: each subscription is a position in the log. One server at a
//! time holds a subscription's lease and posts its wanted events, one at a
//! time in log order, each until the receiver answers 2xx; the position
//! moves past an event only once it is delivered, in the same transaction
//! as the delivery's log line. A server killed mid-delivery leaves the
//! position before that event, so the next holder sends it again: delivery
//! is at least once, and receivers drop repeats by the delivery id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventstore::{RecordedEvent, Store};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use tokio::sync::{Notify, watch};

use super::Options;
use super::table::{Attempt, Recorded, Subscription, Table, WebhookError};

/// Events read from the log per step.
const BATCH: usize = 200;
/// How often a server looks for subscriptions that are due.
const TICK: Duration = Duration::from_secs(1);

/// The signature of a delivery: HMAC-SHA256 under the subscription's
/// secret of `"{timestamp}.{body}"`, in lowercase hex, sent as
/// `Crm-Signature: v1=<hex>` beside `Crm-Timestamp: <timestamp>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // An HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// How long to wait before attempt `failures + 1`: exponential from
/// `retry_min`, capped at `retry_max`, with half of it random (so that
/// subscriptions that failed together do not all come back together).
pub fn backoff(options: &Options, failures: u32) -> Duration {
    let exponential = options
        .retry_min
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)));
    let capped = exponential.min(options.retry_max);
    let half = capped / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// Delivers every subscription of one database that this server holds.
#[derive(Debug)]
pub struct Dispatcher {
    table: Table,
    store: Store,
    options: Options,
    client: reqwest::Client,
    /// This server's name on the leases it holds.
    holder: String,
    /// Wakes the scheduler at once (a subscription was made or resumed).
    wake: Notify,
}

impl Dispatcher {
    pub fn new(table: Table, store: Store, options: Options) -> Result<Arc<Self>, WebhookError> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(super::reach::Guarded::shared(&options.reach))
            .user_agent(concat!("crm-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Arc::new(Self {
            table,
            store,
            options,
            client,
            holder: format!("{}-{}", std::process::id(), uuid::Uuid::now_v7()),
            wake: Notify::new(),
        }))
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The addresses this server's deliveries may connect to.
    pub fn reach(&self) -> &super::Reach {
        &self.options.reach
    }

    /// Looks for due subscriptions now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown`: every `TICK` (or when woken), takes the lease
    /// of each due subscription nobody else holds and delivers it.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            running.retain(|_, task| !task.is_finished());
            let now = Utc::now();
            match self.table.due(&self.holder, now).await {
                Ok(due) => {
                    for id in due {
                        if running.contains_key(&id) {
                            continue;
                        }
                        match self.table.lease(&id, &self.holder, now, self.lease_end()).await {
                            Ok(true) => {
                                let task = tokio::spawn(Arc::clone(&self).deliver(id.clone(), shutdown.clone()));
                                running.insert(id, task);
                            }
                            Ok(false) => {}
                            Err(error) => tracing::warn!(%error, subscription = %id, "cannot take a webhook's lease"),
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot read the webhook subscriptions"),
            }
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = self.wake.notified() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        for (_, task) in running {
            let _ = tokio::time::timeout(self.options.timeout + Duration::from_secs(1), task).await;
        }
    }

    fn lease_end(&self) -> DateTime<Utc> {
        Utc::now() + self.options.lease
    }

    /// Delivers one subscription while this server holds its lease, then
    /// gives the lease up.
    async fn deliver(self: Arc<Self>, id: String, shutdown: watch::Receiver<bool>) {
        if let Err(error) = self.deliver_while_held(&id, shutdown).await {
            tracing::warn!(%error, subscription = %id, "webhook delivery stopped; it resumes at its position");
        }
        if let Err(error) = self.table.release(&id, &self.holder).await {
            tracing::debug!(%error, subscription = %id, "cannot give a webhook's lease up; it expires");
        }
    }

    async fn deliver_while_held(&self, id: &str, mut shutdown: watch::Receiver<bool>) -> Result<(), WebhookError> {
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let Some(subscription) = self.table.get(id).await? else {
                return Ok(());
            };
            if subscription.state != "active" {
                return Ok(());
            }
            let wait = (subscription.next_attempt_at - Utc::now()).to_std().unwrap_or_default();
            if wait > Duration::ZERO {
                // A short wait is slept here; a long one gives the lease up
                // and the scheduler takes it again when it is due.
                if wait > self.options.lease / 2 {
                    return Ok(());
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
                }
                continue;
            }
            let events = self.store.read_all(subscription.position, BATCH).await?;
            if events.is_empty() {
                tokio::select! {
                    _ = self.store.wait_for(subscription.position, self.options.lease / 3) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
                }
                if !self.table.lease(id, &self.holder, Utc::now(), self.lease_end()).await? {
                    return Ok(());
                }
                continue;
            }
            if !self.deliver_batch(&subscription, &events, &shutdown).await? {
                return Ok(());
            }
        }
    }

    /// Sends the wanted events of `events` in order; false if the lease
    /// was lost or the server is stopping. A failed attempt ends the batch
    /// (the caller reads the subscription again and waits for the retry).
    async fn deliver_batch(
        &self,
        subscription: &Subscription,
        events: &[RecordedEvent],
        shutdown: &watch::Receiver<bool>,
    ) -> Result<bool, WebhookError> {
        let (mut saved, mut passed) = (subscription.position, subscription.position);
        let mut failures = subscription.attempts;
        for event in events {
            if !subscription.wants(&event.event_type, &event.stream_id) {
                passed = event.position;
                continue;
            }
            if passed > saved {
                // Saved first, so that retries of this event start after them.
                if !self
                    .table
                    .pass(&subscription.id, &self.holder, passed, self.lease_end())
                    .await?
                {
                    return Ok(false);
                }
            }
            let attempt = self.send(subscription, event, failures + 1).await;
            let retry_at = Utc::now() + backoff(&self.options, failures + 1);
            // 410 Gone: the receiver says the hook is no more (as REST
            // hooks do), so the subscription stops at once, not after its
            // retries; resuming it goes on from the same event.
            let attempts_max = if attempt.status == Some(410) {
                1
            } else {
                self.options.attempts_max
            };
            let recorded = self
                .table
                .record(
                    &subscription.id,
                    &self.holder,
                    &attempt,
                    retry_at,
                    attempts_max,
                    self.lease_end(),
                )
                .await?;
            match recorded {
                Recorded::Delivered => {
                    metrics::counter!("crm_webhook_deliveries_total", "outcome" => "delivered").increment(1);
                    (saved, passed, failures) = (event.position, event.position, 0);
                }
                Recorded::Retry(_) | Recorded::Disabled => {
                    metrics::counter!("crm_webhook_deliveries_total", "outcome" => "failed").increment(1);
                    if recorded == Recorded::Disabled {
                        tracing::warn!(subscription = %subscription.id, url = %subscription.url, position = event.position,
                            "webhook disabled after {attempts_max} failed attempts in a row (410 Gone stops it at once); resume it to go on from here");
                    }
                    return Ok(true);
                }
                Recorded::Lost => return Ok(false),
            }
            if *shutdown.borrow() {
                return Ok(false);
            }
        }
        if passed > saved
            && !self
                .table
                .pass(&subscription.id, &self.holder, passed, self.lease_end())
                .await?
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// One attempt to post `event` to the subscription's URL.
    async fn send(&self, subscription: &Subscription, event: &RecordedEvent, number: u32) -> Attempt {
        let at = Utc::now();
        let started = Instant::now();
        let (status, error) = match self.post(subscription, event, number, at).await {
            Ok(status) => (Some(status), None),
            Err((status, why)) => (status, Some(why)),
        };
        Attempt {
            position: event.position,
            number,
            event_type: event.event_type.clone(),
            at,
            status,
            error,
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Posts `event`, signed at `at`: the receiver's 2xx status, or the
    /// status it answered instead (if any) and why the attempt failed.
    async fn post(
        &self,
        subscription: &Subscription,
        event: &RecordedEvent,
        number: u32,
        at: DateTime<Utc>,
    ) -> Result<u16, (Option<u16>, String)> {
        // An address in the URL is not resolved, so the resolver cannot
        // refuse it: checked here (a name as the resolver resolves it).
        let url = reqwest::Url::parse(&subscription.url)
            .map_err(|e| (None, format!("refused: the URL does not parse: {e}")))?;
        if let Some(why) = self.options.reach.refusal_of_address(&url) {
            return Err((None, format!("refused: {why}")));
        }
        let body = crate::wire::event_json(event).to_string();
        let timestamp = at.timestamp();
        let signature = sign(&subscription.secret, timestamp, body.as_bytes());
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Crm-Delivery-Id", event.position.to_string())
            .header("Crm-Subscription-Id", &subscription.id)
            .header("Crm-Event-Type", &event.event_type)
            .header("Crm-Attempt", number.to_string())
            .header("Crm-Timestamp", timestamp.to_string())
            .header("Crm-Signature", format!("v1={signature}"))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
            Ok(response) => Err((
                Some(response.status().as_u16()),
                format!("the receiver answered {}", response.status()),
            )),
            Err(error) if error.is_timeout() => Err((
                None,
                format!("no answer within {} ms", self.options.timeout.as_millis()),
            )),
            Err(error) => Err((None, format!("cannot reach the receiver: {}", without_url(&error)))),
        }
    }
}

/// A request error's message and causes, without the URL (which may carry
/// credentials).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    text.push_str(if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    });
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed apart, with Python's hmac module:
        // hmac.new(b"whsec_test", b'1700000000.{"position":1}', hashlib.sha256).hexdigest()
        let body = br#"{"position":1}"#;
        assert_eq!(
            sign("whsec_test", 1_700_000_000, body),
            "78de5159cf8758fe4763755b5fb142231b648f535f9eaed0f2d87a1f75c7eddc"
        );
        assert_ne!(
            sign("whsec_test", 1_700_000_001, body),
            sign("whsec_test", 1_700_000_000, body),
            "the timestamp is signed"
        );
    }

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_maximum_with_jitter() {
        let options = Options {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            ..Options::default()
        };
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            let full = Duration::from_secs(full);
            for _ in 0..20 {
                let wait = backoff(&options, failures);
                assert!(
                    wait >= full / 2 && wait <= full,
                    "{failures}: {wait:?} not within {full:?}"
                );
            }
        }
    }
}
