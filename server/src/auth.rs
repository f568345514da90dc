//! API tokens: random, long, shown once, stored only as a hash.
//!
//! A token reads `crm_<id>_<secret>`: 8 random bytes of public id (hex) to
//! find the stored record, and 32 random bytes of secret (hex) of which only
//! the SHA-256 is stored. Checking compares the secret's hash with the stored
//! one in constant time, so response timing says nothing about how close a
//! guess came.

use std::time::{Duration, Instant};

use chrono::Utc;
use domain::Role;
use eventstore::{Store, StoreError, TokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::app::{App, AppError};
use crate::memo::Bounded;

const TOKEN_PREFIX: &str = "crm_";
const TOKEN_ID_BYTES: usize = 8;
const TOKEN_SECRET_BYTES: usize = 32;

/// A freshly issued token. `Debug` hides the secret.
pub struct IssuedToken {
    pub token_id: String,
    pub token: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token_id", &self.token_id)
            .field("token", &"***")
            .finish()
    }
}

/// `n_bytes` random bytes in hex.
pub fn random_hex(n_bytes: usize) -> String {
    let mut bytes = vec![0u8; n_bytes];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// Creates and stores a new token for `user_id`; the caller shows it once.
pub async fn issue(store: &Store, user_id: Uuid) -> Result<IssuedToken, StoreError> {
    let token_id = random_hex(TOKEN_ID_BYTES);
    let secret = random_hex(TOKEN_SECRET_BYTES);
    let record = TokenRecord {
        token_id: token_id.clone(),
        secret_sha256: sha256_hex(&secret),
        user_id: user_id.to_string(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    store.save_token(&record).await?;
    Ok(IssuedToken {
        token: format!("{TOKEN_PREFIX}{token_id}_{secret}"),
        token_id,
    })
}

/// How long a token's stored record is trusted before it is read again: a
/// token revoked (by `crm user revoke`, on any server) stops working within
/// this. A read per request would cost more than the rest of a write.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(1);

/// Token records remembered by one process; past it the memory is cleared.
const TOKENS_CACHED_MAX: usize = 10_000;

/// Recently read token records, by public id. Unknown ids are not kept, so
/// guessing ids cannot fill it.
#[derive(Debug)]
pub struct TokenCache {
    records: Bounded<String, (Instant, TokenRecord)>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            records: Bounded::new(TOKENS_CACHED_MAX),
        }
    }
}

impl TokenCache {
    async fn find(&self, store: &Store, token_id: &str) -> Result<Option<TokenRecord>, StoreError> {
        if let Some((read_at, record)) = self.records.get(token_id)
            && read_at.elapsed() < TOKEN_RECHECK
        {
            return Ok(Some(record));
        }
        let record = store.find_token(token_id).await?;
        if let Some(record) = &record {
            self.records
                .insert(token_id.to_owned(), (Instant::now(), record.clone()));
        }
        Ok(record)
    }
}

/// Who a valid token belongs to.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub name: String,
    pub role: Role,
}

/// The user a bearer token authenticates, or `None` for any unknown,
/// malformed or revoked token.
pub async fn authenticate(app: &App, token: &str) -> Result<Option<Principal>, AppError> {
    let Some((token_id, secret)) = token.strip_prefix(TOKEN_PREFIX).and_then(|rest| rest.split_once('_')) else {
        return Ok(None);
    };
    if token_id.len() != TOKEN_ID_BYTES * 2 || secret.len() != TOKEN_SECRET_BYTES * 2 {
        return Ok(None);
    }
    let Some(record) = app.tokens.find(&app.store, token_id).await? else {
        return Ok(None);
    };
    let matches: bool = sha256_hex(secret)
        .as_bytes()
        .ct_eq(record.secret_sha256.as_bytes())
        .into();
    if !matches || record.revoked_at.is_some() {
        return Ok(None);
    }
    let Ok(user_id) = Uuid::parse_str(&record.user_id) else {
        return Ok(None);
    };
    Ok(app.registered_user(user_id).await?.map(|user| Principal {
        user_id,
        name: user.name,
        role: user.role,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_differ() {
        let (a, b) = (random_hex(TOKEN_SECRET_BYTES), random_hex(TOKEN_SECRET_BYTES));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(sha256_hex("x").len(), 64);
    }
}
