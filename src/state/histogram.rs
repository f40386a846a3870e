//! A fixed-bucket histogram kept as plain numbers inside the aggregates, rendered to
//! Prometheus at scrape time (so observing costs one comparison loop and no atomics).

/// Per-bucket counts over fixed upper bounds, plus sum and count.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[u64]>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds; `+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: vec![0; bounds.len() + 1].into_boxed_slice(),
            sum: 0.0,
            count: 0,
        }
    }

    /// A histogram over `bounds` with saved bucket counts (not cumulative), sum and count;
    /// `None` when the bucket count does not fit the bounds.
    pub fn from_parts(
        bounds: &'static [f64],
        buckets: Vec<u64>,
        sum: f64,
        count: u64,
    ) -> Option<Histogram> {
        (buckets.len() == bounds.len() + 1).then(|| Histogram {
            bounds,
            buckets: buckets.into_boxed_slice(),
            sum,
            count,
        })
    }

    /// Per-bucket counts (not cumulative), the last one for `+Inf`.
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// Records one value.
    pub fn observe(&mut self, value: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[slot] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// `(upper bound, cumulative count)` for every finite bound, as Prometheus exposes them.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(self.buckets.iter())
            .scan(0, |acc, (&bound, &n)| {
                *acc += n;
                Some((bound, *acc))
            })
    }

    /// Sum of observed values.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_upper_inclusive() {
        let mut h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 5.0, 50.0] {
            h.observe(v);
        }
        assert_eq!(
            h.cumulative().collect::<Vec<_>>(),
            vec![(1.0, 2), (10.0, 3)]
        );
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), 56.5);
    }
}
