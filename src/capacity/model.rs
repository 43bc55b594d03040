//! What the levels of a capacity search say together: a confidence interval for a
//! latency percentile from HdrHistogram counts, the knee of throughput against offered
//! load, and a Universal Scalability Law fit. Pure math; no I/O.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A distribution-free confidence interval for the `q` quantile of the population a
/// histogram sampled (order statistics: the rank of the true quantile among n samples is
/// Binomial(n, q); normal approximation with a continuity correction). Values in the
/// histogram's unit; `None` without samples.
pub fn quantile_interval(h: &Histogram<u64>, q: f64, z: f64) -> Option<(u64, u64)> {
    let n = h.len();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let sd = (nf * q * (1.0 - q)).sqrt();
    let lo_rank = (nf * q - z * sd - 0.5).floor().max(1.0);
    let hi_rank = (nf * q + z * sd + 0.5).ceil().min(nf);
    // value_at_quantile(r / n) is the r-th smallest sample (to the histogram's precision).
    Some((
        h.value_at_quantile(lo_rank / nf),
        h.value_at_quantile(hi_rank / nf),
    ))
}

/// z for a two-sided 95 % interval.
pub const Z95: f64 = 1.959_964;

/// The knee: the highest offered load at which throughput still kept up (at least
/// `efficiency` of what was offered), below the first level where it did not. `points`
/// are (offered, achieved) pairs; `None` when even the lowest level fell short.
pub fn knee(points: &[(f64, f64)], efficiency: f64) -> Option<f64> {
    let mut sorted: Vec<(f64, f64)> = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut last = None;
    for (offered, achieved) in sorted {
        if offered > 0.0 && achieved >= efficiency * offered {
            last = Some(offered);
        } else {
            break;
        }
    }
    last
}

/// Universal Scalability Law: X(N) = λN / (1 + σ(N − 1) + κN(N − 1)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usl {
    /// Throughput of one unit of load (ideal slope).
    pub lambda: f64,
    /// Contention (serialisation) coefficient.
    pub sigma: f64,
    /// Coherency (crosstalk) coefficient.
    pub kappa: f64,
    /// Load at which throughput peaks, sqrt((1 − σ) / κ); `None` when κ ≤ 0 (no peak).
    pub peak_load: Option<f64>,
    pub peak_throughput: Option<f64>,
    /// Coefficient of determination of the fitted throughput (1 = perfect).
    pub r2: f64,
    pub points: usize,
}

impl Usl {
    pub fn throughput(&self, n: f64) -> f64 {
        self.lambda * n / (1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0))
    }

    /// Fits (load, throughput) points, at least 4 with positive values. N/X is a quadratic
    /// in N — N/X = (1−σ)/λ + (σ−κ)/λ·N + κ/λ·N² — so ordinary least squares on it gives
    /// λ, σ and κ without an iterative solver.
    pub fn fit(points: &[(f64, f64)]) -> Option<Usl> {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(n, x)| *n > 0.0 && *x > 0.0)
            .collect();
        if pts.len() < 4 {
            return None;
        }
        // Scale N to ~1 so the normal equations stay well conditioned.
        let scale = pts.iter().map(|p| p.0).fold(0.0, f64::max);
        let rows: Vec<(f64, f64)> = pts.iter().map(|(n, x)| (n / scale, n / x)).collect();
        let (a, b, c) = quadratic_least_squares(&rows)?;
        // Undo the scaling: y = a + b (N/s) + c (N/s)^2.
        let (b, c) = (b / scale, c / (scale * scale));
        let inv_lambda = a + b + c;
        if inv_lambda <= 0.0 {
            return None;
        }
        let lambda = 1.0 / inv_lambda;
        let kappa = c * lambda;
        let sigma = b * lambda + kappa;
        let mut usl = Usl {
            lambda,
            sigma,
            kappa,
            peak_load: None,
            peak_throughput: None,
            r2: 0.0,
            points: pts.len(),
        };
        if kappa > 0.0 && sigma < 1.0 {
            let peak = ((1.0 - sigma) / kappa).sqrt();
            usl.peak_load = Some(peak);
            usl.peak_throughput = Some(usl.throughput(peak));
        }
        let mean = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
        let ss_tot: f64 = pts.iter().map(|p| (p.1 - mean).powi(2)).sum();
        let ss_res: f64 = pts
            .iter()
            .map(|p| (p.1 - usl.throughput(p.0)).powi(2))
            .sum();
        usl.r2 = if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        };
        Some(usl)
    }
}

/// Least squares y ≈ a + b·x + c·x² through the 3×3 normal equations.
fn quadratic_least_squares(rows: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let mut s = [0.0f64; 5]; // Σx^0..Σx^4
    let mut t = [0.0f64; 3]; // Σy, Σxy, Σx²y
    for &(x, y) in rows {
        let mut p = 1.0;
        for (k, sk) in s.iter_mut().enumerate() {
            *sk += p;
            if k < 3 {
                t[k] += p * y;
            }
            p *= x;
        }
    }
    let m = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]];
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(m);
    if d.abs() < 1e-12 {
        return None;
    }
    // Cramer's rule: replace column k with t.
    let solve = |k: usize| {
        let mut mk = m;
        for (row, tv) in mk.iter_mut().zip(t) {
            row[k] = tv;
        }
        det(mk) / d
    };
    Some((solve(0), solve(1), solve(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_holds_the_true_quantile_and_narrows_with_samples() {
        let mut small = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut big = small.clone();
        // Uniform 1..=1000 µs: p99 is 990.
        for v in 1..=1000u64 {
            small.record(v).unwrap();
            for _ in 0..100 {
                big.record(v).unwrap();
            }
        }
        let (lo, hi) = quantile_interval(&small, 0.99, Z95).unwrap();
        assert!(lo <= 990 && 990 <= hi, "[{lo}, {hi}]");
        let (blo, bhi) = quantile_interval(&big, 0.99, Z95).unwrap();
        assert!(blo <= 990 && 990 <= bhi, "[{blo}, {bhi}]");
        assert!(bhi - blo < hi - lo, "[{blo}, {bhi}] vs [{lo}, {hi}]");
        let empty = Histogram::<u64>::new(3).unwrap();
        assert_eq!(quantile_interval(&empty, 0.99, Z95), None);
    }

    #[test]
    fn knee_is_where_throughput_stops_keeping_up() {
        let pts = [
            (1e3, 1e3),
            (2e3, 1.99e3),
            (4e3, 3.9e3),
            (8e3, 5e3),
            (16e3, 5.1e3),
        ];
        assert_eq!(knee(&pts, 0.95), Some(4e3));
        assert_eq!(knee(&[(1e3, 10.0)], 0.95), None);
    }

    #[test]
    fn usl_recovers_known_coefficients() {
        let truth = Usl {
            lambda: 1000.0,
            sigma: 0.05,
            kappa: 0.0002,
            peak_load: None,
            peak_throughput: None,
            r2: 0.0,
            points: 0,
        };
        let pts: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
            .iter()
            .map(|&n| (n, truth.throughput(n)))
            .collect();
        let fit = Usl::fit(&pts).unwrap();
        assert!((fit.lambda - 1000.0).abs() < 1.0, "{fit:?}");
        assert!((fit.sigma - 0.05).abs() < 1e-4, "{fit:?}");
        assert!((fit.kappa - 0.0002).abs() < 1e-6, "{fit:?}");
        let peak = fit.peak_load.unwrap();
        assert!((peak - (0.95f64 / 0.0002).sqrt()).abs() < 0.5, "{peak}");
        assert!(fit.r2 > 0.9999);
        assert!(Usl::fit(&pts[..3]).is_none());
    }
}
