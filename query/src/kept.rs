//! `Kept`: a map of at most a fixed number of entries, shared between threads, that starts again
//! empty when it is full. The caches of parsed texts (`parse_cache.rs`) and of plans
//! (`plan_cache.rs`) are both this: what a server repeats is few statements, each of which costs
//! one parse or planning to come back, so clearing beats tracking use. Never grows past its
//! bound; never holds its lock while a caller parses or plans.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

pub(crate) struct Kept<K, V> {
    most: usize,
    entries: Mutex<HashMap<K, V>>,
}

impl<K: Hash + Eq, V: Clone> Kept<K, V> {
    pub fn new(most: usize) -> Self {
        assert!(most > 0, "a cache keeps at least one entry");
        Kept { most, entries: Mutex::new(HashMap::new()) }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.lock().expect("a cache is never poisoned").get(key).cloned()
    }

    pub fn keep(&self, key: K, value: V) {
        let mut entries = self.entries.lock().expect("a cache is never poisoned");
        if entries.len() >= self.most {
            entries.clear();
        }
        entries.insert(key, value);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().expect("a cache is never poisoned").len()
    }
}
