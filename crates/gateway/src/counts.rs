//! Reference counts keyed by anything: "is this the first / the last one?".

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Counts per key; a key is present while its count is above zero.
#[derive(Debug)]
pub struct RefCounts<K> {
    counts: Mutex<HashMap<K, usize>>,
}

impl<K> Default for RefCounts<K> {
    fn default() -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> RefCounts<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one; true when it is the first.
    pub fn add(&self, key: &K) -> bool {
        let mut counts = self.lock();
        let n = counts.entry(key.clone()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Removes one; true when that was the last. Removing an absent key does nothing.
    pub fn remove(&self, key: &K) -> bool {
        let mut counts = self.lock();
        match counts.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                counts.remove(key);
                true
            }
            None => false,
        }
    }

    /// Whether the key is counted.
    pub fn contains(&self, key: &K) -> bool {
        self.lock().contains_key(key)
    }

    /// Every key counted now.
    pub fn keys(&self) -> Vec<K> {
        self.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::RefCounts;

    #[test]
    fn first_and_last() {
        let counts = RefCounts::default();
        assert!(counts.add(&"a"));
        assert!(!counts.add(&"a"));
        assert!(!counts.remove(&"a"));
        assert!(counts.contains(&"a"));
        assert!(counts.remove(&"a"));
        assert!(!counts.contains(&"a"));
        assert!(!counts.remove(&"a"), "absent keys stay absent");
        assert!(counts.add(&"a"), "first again after the last");
    }
}
