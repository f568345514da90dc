//! How pooled connections are checked before use, for the store's pools and
//! the read models' alike. A ping before every use is a round trip per read
//! (on SQLite two thread hops): only a PostgreSQL connection that sat idle,
//! the kind a restarted server has cut, is pinged first.

use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnectionMetadata;

/// How long a pooled connection may sit unused before it is pinged ahead of
/// its next use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// A pool's `before_acquire` check (with `test_before_acquire(false)`):
/// pings `conn` only if it was idle longer than `IDLE_BEFORE_PING`.
pub fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for > IDLE_BEFORE_PING {
            conn.ping().await?;
        }
        Ok(true)
    })
}
