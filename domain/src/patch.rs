//! Helpers for partial updates. A patch field is `None` when the caller did
//! not mention it, `Some(None)` when it was set to `null` (clear it) and
//! `Some(Some(v))` when it was set to `v`.

use serde::{Deserialize, Deserializer};

/// Serde helper that tells a missing field (`None`, through `default`) from an
/// explicit `null` (`Some(None)`).
pub fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The new value of a field if the patch changes it, else `None`.
pub fn changed<T: PartialEq + Clone>(current: &T, proposed: &Option<T>) -> Option<T> {
    match proposed {
        Some(value) if value != current => Some(value.clone()),
        _ => None,
    }
}

/// Overwrites `field` when the change carries a value for it.
pub fn apply<T: Clone>(field: &mut T, change: &Option<T>) {
    if let Some(value) = change {
        *field = value.clone();
    }
}
