//! Webhooks: subscriptions that push the log's events to a receiver's URL
//! as they are recorded.
//!
//! A subscription is a position in the log (`table`), not an outbox: what
//! it has to send is the log after its position, so nothing is missed
//! across restarts and nothing can drift from what was recorded. Delivery
//! (`deliver`) is at least once, in log order, signed (HMAC-SHA256 over
//! the timestamp and body), retried with exponential backoff and jitter,
//! and a subscription that keeps failing is disabled with its position
//! kept, to be resumed from there.

mod deliver;
mod reach;
mod request;
mod table;

use std::time::Duration;

pub use deliver::{Dispatcher, backoff, sign};
pub use reach::Reach;
pub use table::{Delivery, NewSubscription, Subscription, Table, WebhookError};

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a receiver has to answer one delivery.
    pub timeout: Duration,
    /// The wait after a first failure; it doubles with each failure after.
    pub retry_min: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// Failed attempts in a row after which a subscription is disabled.
    pub attempts_max: u32,
    /// How long a server's hold on a subscription lasts unless renewed: a
    /// server that dies mid-delivery is taken over after this.
    pub lease: Duration,
    /// The addresses deliveries may connect to (`reach`).
    pub reach: Reach,
}

impl Default for Options {
    /// Ten seconds to answer; retries after 1 s, 2 s, 4 s ... up to an
    /// hour apart (each wait half random); disabled after 20 failures in a
    /// row (4 to 8 hours).
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(3_600),
            attempts_max: 20,
            lease: Duration::from_secs(30),
            reach: Reach::default(),
        }
    }
}
