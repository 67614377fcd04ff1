//! Synthetic series with known answers, for the tests and the benchmarks: daily cycles with
//! noise, spikes, level shifts, drifts, missing samples, counters with resets, linear fills and a
//! garbage collection's jump. Deterministic: a seed gives the same series everywhere.

use macha_core::Timestamp;
use std::ops::Range;

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
}

/// A Monday, 00:00 UTC (2026-11-30), where synthetic series start.
pub const START: Timestamp = Timestamp(1_796_083_200_000 - 86_400_000);

/// `n` timestamps `step_secs` apart from [`START`].
pub fn times(n: usize, step_secs: i64) -> Vec<Timestamp> {
    (0..n).map(|i| Timestamp(START.0 + i as i64 * step_secs * 1000)).collect()
}

/// A daily cycle (`level ± amplitude`, peaking at 14:00 UTC) plus Gaussian noise of spread `noise`.
pub fn daily_cycle(ts: &[Timestamp], level: f64, amplitude: f64, noise: f64, rng: &mut Rng) -> Vec<f64> {
    ts.iter()
        .map(|t| {
            let day = (t.0.rem_euclid(86_400_000)) as f64 / 86_400_000.0;
            let phase = 2.0 * std::f64::consts::PI * (day - 14.0 / 24.0);
            level + amplitude * phase.cos() + noise * rng.normal()
        })
        .collect()
}

/// Adds `size` to single samples at `at`.
pub fn spikes(v: &mut [f64], at: &[usize], size: f64) {
    for &i in at {
        if let Some(x) = v.get_mut(i) {
            *x += size;
        }
    }
}

/// Adds `size` to every sample in `range`.
pub fn shift(v: &mut [f64], range: Range<usize>, size: f64) {
    for x in v.iter_mut().take(range.end).skip(range.start) {
        *x += size;
    }
}

/// Adds a ramp of `per_sample` per sample from `from` on.
pub fn drift(v: &mut [f64], from: usize, per_sample: f64) {
    for (k, x) in v.iter_mut().skip(from).enumerate() {
        *x += per_sample * k as f64;
    }
}

/// Drops each sample with probability `p` and whole runs of `run` samples every `every` samples.
pub fn missing(ts: &[Timestamp], v: &[f64], p: f64, every: usize, run: usize, rng: &mut Rng) -> Vec<(Timestamp, f64)> {
    ts.iter()
        .zip(v)
        .enumerate()
        .filter(|(i, _)| !(every > 0 && i % every < run))
        .filter(|_| rng.uniform() >= p)
        .map(|(_, (t, x))| (*t, *x))
        .collect()
}

/// A cumulative counter growing at `rate` per second (with noise), reset to zero at `resets`.
pub fn counter(ts: &[Timestamp], rate: f64, noise: f64, resets: &[usize], rng: &mut Rng) -> Vec<f64> {
    let mut c = 0.0f64;
    let mut out = Vec::with_capacity(ts.len());
    for (i, w) in ts.windows(2).enumerate() {
        if i == 0 {
            out.push(0.0);
        }
        let dt = (w[1].0 - w[0].0) as f64 / 1000.0;
        c += (rate + noise * rng.normal()).max(0.0) * dt;
        if resets.contains(&(i + 1)) {
            c = 0.0;
        }
        out.push(c.round());
    }
    out
}

/// Free space of a disk of `total` filling linearly at `per_hour` from `free0`, with small noise;
/// at `gc` (if any) `freed` is given back at once.
pub fn fill(
    ts: &[Timestamp],
    free0: f64,
    per_hour: f64,
    noise: f64,
    gc: Option<(usize, f64)>,
    rng: &mut Rng,
) -> Vec<f64> {
    let mut back = 0.0;
    ts.iter()
        .enumerate()
        .map(|(i, t)| {
            if let Some((at, freed)) = gc
                && i == at
            {
                back += freed;
            }
            let hours = (t.0 - ts[0].0) as f64 / 3_600_000.0;
            (free0 - per_hour * hours + back + noise * rng.normal()).max(0.0)
        })
        .collect()
}
