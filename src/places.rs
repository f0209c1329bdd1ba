//! Counted places: how many connections or subscriptions one key (a client
//! address, a token subject) holds, with a cap per key and one in all. A place is a
//! guard that gives itself back when dropped, so no path can leak one.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// A set of places: at most `per_key` per key and `total` in all (0: no cap).
pub struct Places<K: Hash + Eq + Clone> {
    state: Arc<Mutex<Counts<K>>>,
    per_key: usize,
    total: usize,
}

struct Counts<K> {
    by_key: HashMap<K, usize>,
    total: usize,
}

fn lock<K>(m: &Mutex<Counts<K>>) -> MutexGuard<'_, Counts<K>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// This key holds `per_key` places already.
    Key,
    /// All `total` places are taken.
    Total,
}

impl<K: Hash + Eq + Clone> Places<K> {
    pub fn new(per_key: usize, total: usize) -> Places<K> {
        Places {
            state: Arc::new(Mutex::new(Counts {
                by_key: HashMap::new(),
                total: 0,
            })),
            per_key,
            total,
        }
    }

    /// A place for `key`, unless its cap or the total one is reached.
    pub fn take(&self, key: K) -> Result<Place<K>, Full> {
        let mut c = lock(&self.state);
        if self.total > 0 && c.total >= self.total {
            return Err(Full::Total);
        }
        let n = c.by_key.entry(key.clone()).or_default();
        if self.per_key > 0 && *n >= self.per_key {
            return Err(Full::Key);
        }
        *n += 1;
        c.total += 1;
        Ok(Place {
            state: self.state.clone(),
            key,
        })
    }

    /// The cap per key (0: none).
    pub fn per_key(&self) -> usize {
        self.per_key
    }

    /// Places taken now.
    pub fn taken(&self) -> usize {
        lock(&self.state).total
    }
}

/// One taken place; given back when dropped.
pub struct Place<K: Hash + Eq + Clone> {
    state: Arc<Mutex<Counts<K>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Place<K> {
    fn drop(&mut self) {
        let mut c = lock(&self.state);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Full, Places};

    #[test]
    fn caps_hold_per_key_and_in_all_and_dropped_places_come_back() {
        let p: Places<&str> = Places::new(2, 3);
        let a1 = p.take("a").expect("first");
        let _a2 = p.take("a").expect("second");
        assert_eq!(p.take("a").err(), Some(Full::Key));
        let _b1 = p.take("b").expect("b");
        assert_eq!(p.take("c").err(), Some(Full::Total));
        drop(a1);
        assert_eq!(p.taken(), 2);
        let _c = p.take("c").expect("a place came back");
        assert_eq!(p.take("a").err(), Some(Full::Total));
    }

    #[test]
    fn zero_means_no_cap() {
        let p: Places<u8> = Places::new(0, 0);
        let held: Vec<_> = (0..100).map(|_| p.take(1).expect("uncapped")).collect();
        assert_eq!(p.taken(), 100);
        drop(held);
        assert_eq!(p.taken(), 0);
    }
}
