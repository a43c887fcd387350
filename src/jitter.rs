//! Random spread for retry and re-queue delays, so work that failed together does not come
//! back together, and ids that must not repeat. Not for anything secret: the randomness is a
//! per-call `RandomState` hash of the clock.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A uniformly spread duration in `[0, spread)`, in whole milliseconds (zero for a spread under
/// one millisecond).
pub fn jitter(spread: Duration) -> Duration {
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    if spread_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(clock_hasher().finish() % spread_ms)
}

/// 16 hex digits that no other call returns (a lock token, a batch id): not secret, random per
/// call as [`jitter`] is, and mixed with the process id and a per-process counter, so two calls
/// in the same nanosecond or two processes differ too.
pub fn unique_hex() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = clock_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

/// A hasher with per-call random keys that has hashed the clock.
fn clock_hasher() -> std::collections::hash_map::DefaultHasher {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_below_its_spread_and_varies() {
        let spread = Duration::from_millis(50);
        let seen: std::collections::HashSet<Duration> = (0..200).map(|_| jitter(spread)).collect();
        assert!(seen.iter().all(|value| *value < spread), "{seen:?}");
        assert!(seen.len() > 1);
        assert_eq!(jitter(Duration::from_micros(900)), Duration::ZERO);
    }
}
