//! Scores become integer weights, once, at ingest (settlement.md §1). The only place where a
//! floating-point number touches the ledger; everything after it is integer.

/// The weight of an inference's top-scored entry.
pub const WEIGHT_SCALE: u32 = 1_000_000;

/// Converts one inference's scores to weights: `round(s / max * 1e6)`, in IEEE-754 doubles in
/// exactly that order, rounding half away from zero (`f64::round`). All weights are 0 when
/// the list is empty or every score is 0. On a NaN, infinite or negative score, returns the
/// position of the first such score and writes nothing.
pub fn weights_from_scores(scores: &[f64], out: &mut Vec<u32>) -> Result<(), usize> {
    let max = max_score(scores.iter().copied())?;
    out.reserve(scores.len());
    out.extend(scores.iter().map(|&s| weight_of(s, max)));
    Ok(())
}

/// The largest of an inference's scores (0 for none), or the position of the first NaN,
/// infinite or negative one: the scale `weight_of` divides by.
pub fn max_score(scores: impl IntoIterator<Item = f64>) -> Result<f64, usize> {
    let mut max = 0.0f64;
    for (i, s) in scores.into_iter().enumerate() {
        // NaN fails `is_finite`; -0.0 is not below 0.0 and counts as zero.
        if !s.is_finite() || s < 0.0 {
            return Err(i);
        }
        if s > max {
            max = s;
        }
    }
    Ok(max)
}

/// The weight of a score `s` of an inference whose largest score is `max` (from `max_score`,
/// so `0 <= s <= max`): 0 when every score is 0.
pub fn weight_of(s: f64, max: f64) -> u32 {
    if max == 0.0 {
        return 0;
    }
    let w = (s / max * f64::from(WEIGHT_SCALE)).round();
    debug_assert!((0.0..=f64::from(WEIGHT_SCALE)).contains(&w));
    w as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(scores: &[f64]) -> Vec<u32> {
        let mut out = Vec::new();
        weights_from_scores(scores, &mut out).unwrap();
        out
    }

    #[test]
    fn worked_example_weights() {
        assert_eq!(w(&[0.9, 0.3, 0.3]), vec![1_000_000, 333_333, 333_333]);
    }

    #[test]
    fn zero_and_empty() {
        assert_eq!(w(&[]), Vec::<u32>::new());
        assert_eq!(w(&[0.0, 0.0]), vec![0, 0]);
        assert_eq!(w(&[0.0, 5.0]), vec![0, 1_000_000]);
    }

    #[test]
    fn rounds_half_away_from_zero() {
        // 1/8 * 1e6 = 125000 exactly; 0.0000005 * 1e6 = 0.5 exactly in the chosen inputs
        // below (s/m = 2^-21 gives 0.476..., so use a value whose quotient is exactly .5).
        // s = 1, m = 2_000_000: 1/2e6*1e6 = 0.5 -> 1 (half-to-even would give 0).
        assert_eq!(w(&[1.0, 2_000_000.0]), vec![1, 1_000_000]);
        // 3/2e6*1e6 = 1.5 -> 2 (half-to-even would also give 2); 5/2e6*1e6 = 2.5 -> 3 (not 2).
        assert_eq!(w(&[5.0, 2_000_000.0]), vec![3, 1_000_000]);
    }

    #[test]
    fn refuses_bad_scores() {
        let mut out = Vec::new();
        assert_eq!(weights_from_scores(&[1.0, f64::NAN], &mut out), Err(1));
        assert_eq!(weights_from_scores(&[f64::INFINITY], &mut out), Err(0));
        assert_eq!(weights_from_scores(&[1.0, 2.0, -0.5], &mut out), Err(2));
        assert!(out.is_empty());
    }
}
