//! Batch sizing: the seed's heuristic. (The engine needs no partitioning of its own: the
//! drivers read the input a batch at a time and feed it, see `engine::fresh`.)

/// The seed's batch-size heuristic: 0 -> 1; up to 100 -> all (capped at `max`); up to 1000 ->
/// about ten batches (`n / 10`, capped); more -> `max`. `max` must be at least 1.
///
/// ```
/// use batchguard::partition::calculate_batch_size;
/// assert_eq!(calculate_batch_size(500, 100), 50);
/// ```
pub fn calculate_batch_size(total_items: u64, max_batch_size: u64) -> u64 {
    debug_assert!(max_batch_size >= 1);
    match total_items {
        0 => 1,
        1..=100 => total_items.min(max_batch_size),
        101..=1000 => (total_items / 10).min(max_batch_size),
        _ => max_batch_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_matches_the_seed_examples() {
        assert_eq!(calculate_batch_size(0, 32), 1);
        assert_eq!(calculate_batch_size(50, 32), 32);
        assert_eq!(calculate_batch_size(50, 100), 50);
        assert_eq!(calculate_batch_size(500, 32), 32);
        assert_eq!(calculate_batch_size(500, 100), 50);
        assert_eq!(calculate_batch_size(5000, 32), 32);
    }
}
