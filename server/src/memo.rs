//! What one process remembers between requests (users, tokens, records'
//! states): a map that empties itself when it would pass its bound, so the
//! memory it holds never grows with the store, and refills as things are
//! asked for again.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    max: usize,
    entries: RwLock<HashMap<K, V>>,
}

impl<K: Eq + Hash, V: Clone> Bounded<K, V> {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            entries: RwLock::default(),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.read().get(key).cloned()
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.write();
        if entries.len() >= self.max {
            entries.clear();
        }
        entries.insert(key, value);
    }

    pub fn remove(&self, key: &K) {
        self.write().remove(key);
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<K, V>> {
        self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<K, V>> {
        self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
