//! Mutexes, handled one way: a lock whose holder panicked is taken anyway.
//! The state behind every mutex here is bookkeeping that stays valid after
//! any single update (maps of leases, waits, queued calls): refusing it, or
//! skipping the update, would turn one panic into a daemon that silently
//! stops renewing leases or granting tokens.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking it over if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_over_with_its_data() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let held = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let mut v = held.lock().unwrap_or_else(PoisonError::into_inner);
            v.push(2);
            panic!("a holder panics");
        })
        .join();
        assert!(m.is_poisoned());
        lock(&m).push(3);
        assert_eq!(*lock(&m), vec![1, 2, 3]);
    }
}
