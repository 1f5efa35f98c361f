//! Exponential backoff: the one formula behind the daemon's task retries, its session
//! restarts and the LLM client's retries.

/// How long to wait after `failures` earlier failures: `base_ms · 2^failures`, at most
/// `max_ms` (0 failures → `base_ms`). The exponent stops growing at 30 and the product
/// saturates, so every input has an answer and none overflows.
#[must_use]
pub fn backoff_ms(base_ms: u64, failures: u32, max_ms: u64) -> u64 {
    base_ms.saturating_mul(1u64 << failures.min(30)).min(max_ms)
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn doubles_per_failure_up_to_the_cap() {
        let waits: Vec<u64> = (0..6).map(|n| backoff_ms(100, n, 1_000)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn huge_inputs_saturate_instead_of_overflowing() {
        // The exponent stops at 30: 2^30 ms is still below an unlimited cap.
        assert_eq!(backoff_ms(1, 31, u64::MAX), 1 << 30);
        assert_eq!(backoff_ms(1, u32::MAX, u64::MAX), 1 << 30);
        assert_eq!(backoff_ms(u64::MAX / 2, 3, u64::MAX), u64::MAX);
        assert_eq!(backoff_ms(u64::MAX, u32::MAX, 5_000), 5_000);
    }

    #[test]
    fn a_zero_base_or_cap_means_no_wait() {
        assert_eq!(backoff_ms(0, 10, 1_000), 0);
        assert_eq!(backoff_ms(100, 3, 0), 0);
    }
}
