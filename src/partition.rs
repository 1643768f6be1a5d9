//! Batch sizing and partitioning.

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

/// The half-open record range `[start, end)` of batch `index` when `total` records are cut
/// into batches of `size`; None past the end.
pub fn batch_range(total: u64, size: u64, index: u64) -> Option<(u64, u64)> {
    let start = index.checked_mul(size)?;
    (start < total).then(|| (start, (start + size).min(total)))
}

/// How many batches `total` records make.
pub fn batch_count(total: u64, size: u64) -> u64 {
    total.div_ceil(size)
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

    #[test]
    fn ranges_cover_every_record_once() {
        let (total, size) = (10, 3);
        let ranges: Vec<_> = (0..).map_while(|i| batch_range(total, size, i)).collect();
        assert_eq!(ranges, vec![(0, 3), (3, 6), (6, 9), (9, 10)]);
        assert_eq!(batch_count(total, size), 4);
        assert_eq!(batch_range(total, size, u64::MAX), None);
    }
}
