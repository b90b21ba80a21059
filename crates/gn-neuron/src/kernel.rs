//! The kernel loop of a spiking layer: T steps of the neuron on a folded `[T·N, …]`
//! current or on an `[N, …]` current read at every step, with one firing unit or one per
//! channel. It performs, element for element and in f32, the operations of the standard
//! expansion the converter writes (`q = x / unit`, `u(0) = v(0) / θ_GN`, per step
//! `p = u + q_t`, `c = min(max(⌊p⌋, 0), τ)`, `u = p − c`, output `c · unit`), so its
//! results are the function body's, bit for bit.

use crate::{MAX_TAU, MAX_TIMESTEPS};

/// One spiking layer's constants, read from the node's attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kernel {
    pub theta_gn: f32,
    pub tau: f32,
    pub u_init: f32,
    pub timesteps: usize,
    /// The current is `[N, …]`, the same at every step (the `…Direct` ops).
    pub direct: bool,
}

/// Elements per block: the membranes of a block stay in L1 while the T steps run.
pub const BLOCK: usize = 1024;

impl Kernel {
    /// The kernel of a node whose attributes hold `theta_gn` (θ for IF), `tau` (1 for
    /// IF), `v_init` and `timesteps`, checked against the limits every runtime shares.
    pub fn new(theta_gn: f32, tau: i64, v_init: f32, timesteps: i64, direct: bool) -> Result<Kernel, String> {
        if !(theta_gn.is_normal() && theta_gn > 0.0) {
            return Err(format!("θ_GN = {theta_gn:e} is not a positive normal float32 threshold"));
        }
        if !(1..=MAX_TAU as i64).contains(&tau) {
            return Err(format!("τ = {tau} is out of range (1 to {MAX_TAU})"));
        }
        if !(1..=MAX_TIMESTEPS as i64).contains(&timesteps) {
            return Err(format!("timesteps = {timesteps} is out of range (1 to {MAX_TIMESTEPS})"));
        }
        let u_init = v_init / theta_gn;
        if !u_init.is_finite() {
            return Err(format!("v(0) = {v_init} is not a finite membrane potential"));
        }
        Ok(Kernel { theta_gn, tau: tau as f32, u_init, timesteps: timesteps as usize, direct })
    }

    /// The unit of each channel of a per-channel layer (θ_GN · θ_c) on a current of shape
    /// `current`, from its thresholds per channel: `factors`, of shape `shape`, which must
    /// be `[1, C, 1, …]` with C the current's axis 1 ([`check_factors`]).
    pub fn channel_units(&self, current: &[usize], shape: &[usize], factors: &[f32]) -> Result<Vec<f32>, String> {
        let fits = shape.len() == current.len() && current.len() >= 2 && shape[1] == current[1];
        if !fits {
            return Err(format!(
                "the thresholds per channel have shape {shape:?}; for a current of shape {current:?} they must be [1, C, 1, …] with C = the current's axis 1"
            ));
        }
        check_factors(self.theta_gn, shape, factors)
    }
    /// The neuron's T steps on `x`, `[T·N, …]` flattened (step-major), or `[N, …]` for a
    /// direct current, into `out`, `[T·N, …]`.
    pub fn run(&self, x: &[f32], out: &mut [f32]) {
        self.run_with(x, &[self.theta_gn], 1, out)
    }

    /// [`Kernel::run`] with a unit per channel: `units` holds θ_GN · θ_c for each channel
    /// c (or the one unit of the layer), and an element's channel is its index within
    /// the step over `spatial` (the size of one channel of one sample), modulo the count.
    pub fn run_with(&self, x: &[f32], units: &[f32], spatial: usize, out: &mut [f32]) {
        let per_step = out.len() / self.timesteps.max(1);
        assert_eq!(x.len(), if self.direct { per_step } else { out.len() });
        assert!(!units.is_empty() && spatial > 0);
        for block in 0..self.blocks(per_step) {
            // SAFETY: `out` holds T × `per_step` elements, and `x` the `per_step` (direct)
            // or T × `per_step` elements the assertion above checked.
            unsafe { self.run_block(x, out.as_mut_ptr(), per_step, block, units, spatial) }
        }
    }

    /// How many blocks of [`BLOCK`] elements a step of `per_step` elements has.
    pub fn blocks(&self, per_step: usize) -> usize {
        per_step.div_ceil(BLOCK)
    }

    /// The T steps of one block of elements. Blocks write disjoint elements of `out`, so
    /// they can run on several threads at once.
    ///
    /// # Safety
    /// `out` must point to T × `per_step` writable elements, `x.len()` must be at least
    /// `per_step` (direct) or T × `per_step`, `units` must not be empty, `spatial` must
    /// not be 0, and no other thread may touch this block's elements of `out`.
    pub unsafe fn run_block(
        &self,
        x: &[f32],
        out: *mut f32,
        per_step: usize,
        block: usize,
        units: &[f32],
        spatial: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return self.run_block_avx2(x, out, per_step, block, units, spatial);
        }
        self.steps(x, out, per_step, block, units, spatial)
    }

    /// [`Kernel::steps`] compiled for AVX2: eight lanes instead of four. The operations and
    /// their order are the same (no fused multiply-add), so the results are too.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_block_avx2(
        &self,
        x: &[f32],
        out: *mut f32,
        per_step: usize,
        block: usize,
        units: &[f32],
        spatial: usize,
    ) {
        self.steps(x, out, per_step, block, units, spatial)
    }

    #[inline(always)]
    unsafe fn steps(&self, x: &[f32], out: *mut f32, per_step: usize, block: usize, units: &[f32], spatial: usize) {
        let start = block * BLOCK;
        let len = BLOCK.min(per_step - start);
        let mut u = [self.u_init; BLOCK];
        let u = &mut u[..len];
        // The unit of each element of the block, when the layer has one per channel.
        let mut unit = [0f32; BLOCK];
        let unit = &mut unit[..len];
        if units.len() > 1 {
            // Runs of `spatial` elements share a channel: one division per block.
            let (mut channel, mut at) = ((start / spatial) % units.len(), start % spatial);
            let mut i = 0;
            while i < len {
                let run = (spatial - at).min(len - i);
                unit[i..i + run].fill(units[channel]);
                i += run;
                at = 0;
                channel = if channel + 1 == units.len() { 0 } else { channel + 1 };
            }
        }
        if self.direct {
            // The body divides a direct current once (q = x / θ_GN) and adds q at every step.
            let mut q = [0f32; BLOCK];
            let q = &mut q[..len];
            let xs = &x[start..start + len];
            if units.len() > 1 {
                for ((q, &x), &unit) in q.iter_mut().zip(xs).zip(unit.iter()) {
                    *q = x / unit;
                }
            } else {
                for (q, &x) in q.iter_mut().zip(xs) {
                    *q = x / units[0];
                }
            }
            for t in 0..self.timesteps {
                let os = std::slice::from_raw_parts_mut(out.add(t * per_step + start), len);
                match units.len() {
                    1 => self.step::<false, _>(u, q, os, std::iter::repeat(units[0])),
                    _ => self.step::<false, _>(u, q, os, unit.iter().copied()),
                }
            }
        } else {
            for t in 0..self.timesteps {
                let at = t * per_step + start;
                let os = std::slice::from_raw_parts_mut(out.add(at), len);
                match units.len() {
                    1 => self.step::<true, _>(u, &x[at..at + len], os, std::iter::repeat(units[0])),
                    _ => self.step::<true, _>(u, &x[at..at + len], os, unit.iter().copied()),
                }
            }
        }
    }

    /// One step on a block: `p = u + q` (with `q = x / unit` when `DIVIDE`), then the
    /// spike count and the reset; `units` yields each element's unit.
    #[inline(always)]
    fn step<const DIVIDE: bool, U: Iterator<Item = f32>>(&self, u: &mut [f32], xs: &[f32], os: &mut [f32], units: U) {
        // ⌊p⌋ clipped to [0, τ] is ⌊p clamped to [0, τ + 1]⌋ clipped to τ, and on that range
        // truncation to i32 is exact: no libm call, and the loop vectorizes.
        let high = self.tau + 1.0;
        for (((u, &x), o), unit) in u.iter_mut().zip(xs).zip(os.iter_mut()).zip(units) {
            let p = *u + if DIVIDE { x / unit } else { x };
            // `max` and `min` return the number when p is NaN: never NaN, in range.
            let clamped = p.max(0.0).min(high);
            // SAFETY: 0 ≤ clamped ≤ τ + 1, well inside i32.
            let floor = unsafe { clamped.to_int_unchecked::<i32>() } as f32;
            let c = floor.min(self.tau);
            *u = p - c;
            *o = c * unit;
        }
    }
}

/// Checks the thresholds per channel of a layer of firing unit `unit` (θ_GN): `factors`,
/// of shape `shape`, must be `[1, C, 1, …]` (rank 2 or more), every factor positive and
/// finite, and every unit θ_GN · θ_c a normal float32. Returns the units, or the one unit
/// for an empty tensor. The converter's model check, the tract kernels and gn-ort-ops all
/// check through it.
pub fn check_factors(unit: f32, shape: &[usize], factors: &[f32]) -> Result<Vec<f32>, String> {
    let form = shape.len() >= 2 && shape.iter().enumerate().all(|(i, &d)| i == 1 || d == 1);
    if !form || factors.len() != shape.iter().product::<usize>() {
        return Err(format!("the thresholds per channel have shape {shape:?}; they must be [1, C, 1, …]"));
    }
    if let Some(bad) = factors.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
        return Err(format!("a channel's θ factor is {bad}, not a positive finite number"));
    }
    if factors.is_empty() {
        return Ok(vec![unit]);
    }
    let units: Vec<f32> = factors.iter().map(|&t| unit * t).collect();
    if let Some(bad) = units.iter().find(|u| !u.is_normal()) {
        return Err(format!("a channel's unit θ_GN · θ_c = {bad:e} is not a normal float32"));
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel against the function body's steps written out plainly, one element at a
    /// time, on blocks that do not divide the layer.
    #[test]
    fn the_kernel_runs_the_function_body() {
        let kernel = Kernel { theta_gn: 0.7, tau: 4.0, u_init: 0.5, timesteps: 3, direct: false };
        let per_step = 2 * BLOCK + 37;
        let mut x: Vec<f32> = (0..3 * per_step).map(|i| ((i * 7919 % 1013) as f32 - 300.0) / 97.0).collect();
        // Far beyond the clamp, and exactly on thresholds.
        x[..6].copy_from_slice(&[1e30, -1e30, 3.0e9, 0.35, 0.7, -0.35]);
        let mut got = vec![0f32; x.len()];
        kernel.run(&x, &mut got);
        // The portable loop (what runs without AVX2) gives the same values.
        let mut portable = vec![0f32; x.len()];
        for block in 0..kernel.blocks(per_step) {
            // SAFETY: `portable` has x's length, T × per_step.
            unsafe { kernel.steps(&x, portable.as_mut_ptr(), per_step, block, &[kernel.theta_gn], 1) }
        }
        assert_eq!(got, portable);
        for j in 0..per_step {
            let mut u = kernel.u_init;
            for t in 0..3 {
                let k = t * per_step + j;
                let p = u + x[k] / kernel.theta_gn;
                let c = p.floor().max(0.0).min(kernel.tau);
                u = p - c;
                assert_eq!(got[k], c * kernel.theta_gn, "element {j}, step {t}");
            }
        }
    }

    /// The direct op on an `[N, …]` current equals the folded op on that current tiled T
    /// times.
    #[test]
    fn the_direct_kernel_equals_the_folded_one_on_the_tiled_current() {
        let per_step = BLOCK + 5;
        let x: Vec<f32> = (0..per_step).map(|i| ((i * 7919 % 1013) as f32 - 300.0) / 97.0).collect();
        let tiled: Vec<f32> = x.iter().cycle().take(4 * per_step).copied().collect();
        let folded = Kernel { theta_gn: 0.3, tau: 8.0, u_init: 0.5, timesteps: 4, direct: false };
        let direct = Kernel { direct: true, ..folded };
        let (mut a, mut b) = (vec![0f32; 4 * per_step], vec![0f32; 4 * per_step]);
        folded.run(&tiled, &mut a);
        direct.run(&x, &mut b);
        assert_eq!(a, b);
        assert!(a.iter().any(|&v| v > 0.0) && a[..per_step] != a[per_step..2 * per_step]);
    }

    /// A unit per channel: each element divides and multiplies by its channel's unit, on
    /// blocks that cross channel boundaries, folded and direct.
    #[test]
    fn the_per_channel_kernel_uses_each_channels_unit() {
        let (t, n, c, spatial) = (3, 2, 3, 700);
        let per_step = n * c * spatial;
        let units = [0.25f32, 0.7, 1.3];
        for direct in [false, true] {
            let kernel = Kernel { theta_gn: 0.25, tau: 4.0, u_init: 0.5, timesteps: t, direct };
            let len = if direct { per_step } else { t * per_step };
            let x: Vec<f32> = (0..len).map(|i| ((i * 7919 % 1013) as f32 - 300.0) / 97.0).collect();
            let mut got = vec![0f32; t * per_step];
            kernel.run_with(&x, &units, spatial, &mut got);
            for j in 0..per_step {
                let unit = units[(j / spatial) % c];
                let mut u = kernel.u_init;
                for step in 0..t {
                    let k = step * per_step + j;
                    let p = u + x[if direct { j } else { k }] / unit;
                    let spikes = p.floor().max(0.0).min(kernel.tau);
                    u = p - spikes;
                    assert_eq!(got[k], spikes * unit, "element {j}, step {step}, direct {direct}");
                }
            }
        }
    }

    #[test]
    fn values_beyond_the_shared_limits_are_refused() {
        assert!(Kernel::new(0.5, 4, 0.25, 4, false).is_ok());
        for (theta_gn, tau, v_init, t, expected) in [
            (1e-45, 4, 0.0, 4, "not a positive normal"),
            (f32::NAN, 4, 0.25, 4, "not a positive normal"),
            (-1.0, 4, 0.25, 4, "not a positive normal"),
            (0.5, 0, 0.25, 4, "τ = 0 is out of range"),
            (0.5, 1025, 0.25, 4, "τ = 1025 is out of range"),
            (0.5, 4, 0.25, 513, "timesteps = 513 is out of range (1 to 512)"),
            (0.5, 4, 0.25, 1 << 20, "out of range"),
            (0.5, 4, f32::INFINITY, 4, "not a finite membrane"),
        ] {
            let err = Kernel::new(theta_gn, tau, v_init, t, false).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn thresholds_per_channel_must_be_one_positive_factor_per_channel() {
        let kernel = Kernel::new(0.5, 4, 0.25, 2, false).unwrap();
        let current = [2, 3, 4, 4];
        assert_eq!(kernel.channel_units(&current, &[1, 3, 1, 1], &[1.0, 2.0, 4.0]).unwrap(), [0.5, 1.0, 2.0]);
        for (shape, factors, expected) in [
            (vec![1, 3, 4, 4], vec![1.0; 48], "must be [1, C, 1, …]"),
            (vec![4, 3, 1, 1], vec![1.0; 12], "must be [1, C, 1, …]"),
            (vec![1, 2, 1, 1], vec![1.0; 2], "C = the current's axis 1"),
            (vec![1, 3, 1], vec![1.0; 3], "C = the current's axis 1"),
            (vec![1, 3, 1, 1], vec![1.0, f32::NAN, 1.0], "θ factor is NaN"),
            (vec![1, 3, 1, 1], vec![1.0, 0.0, 1.0], "θ factor is 0"),
            (vec![1, 3, 1, 1], vec![1.0, 1e-44, 1.0], "not a normal float32"),
        ] {
            let err = kernel.channel_units(&current, &shape, &factors).unwrap_err();
            assert!(err.contains(expected), "{shape:?} {factors:?}: {err}");
        }
    }
}
