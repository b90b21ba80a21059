//! The `gn.transpile` ops of a custom-op model (`gn-transpile --emit custom-op`) as an
//! ONNX Runtime custom-op library: one fused kernel per spiking layer instead of the
//! model-local function's expansion (Div, Reshape, Split, T × (Add, Floor, Clip, Sub),
//! Concat, Reshape, Mul). `GroupNeuron` / `IFNeuron` read a folded `[T·N, …]` current;
//! `GroupNeuronDirect` / `IFNeuronDirect` read an `[N, …]` current that is the same at
//! every step, and write `[T·N, …]`. The `…PerChannel` variants of the four (a layer
//! calibrated per channel) read a second input, `[1, C, 1, …]`, by which θ is scaled
//! per channel.
//!
//! ```python
//! so = onnxruntime.SessionOptions()
//! so.register_custom_ops_library("libgn_ort_ops.so")
//! session = onnxruntime.InferenceSession("snn.onnx", so)
//! ```
//!
//! Without the library the model still runs: ONNX Runtime inlines the functions. With it,
//! each `GroupNeuron` / `IFNeuron` node runs [`Kernel::run`], which performs element for
//! element, in f32, the operations of the function body: `q = x / θ_GN`,
//! `u(0) = v(0) / θ_GN`, per step `p = u + q_t`, `c = min(max(⌊p⌋, 0), τ)`, `u = p − c`,
//! output `c · θ_GN`, with `θ_GN · θ_c` in place of θ_GN for channel c of a per-channel
//! layer. The results are the function's, bit for bit.

use std::ffi::{c_char, c_void, CStr};
use std::ptr;

use ort_sys::{
    ONNXTensorElementDataType, OrtApi, OrtApiBase, OrtCustomOp, OrtCustomOpInputOutputCharacteristic, OrtErrorCode,
    OrtKernelContext, OrtKernelInfo, OrtMemType, OrtSessionOptions, OrtStatus, OrtStatusPtr, OrtValue,
};

/// The domain of the ops, as the converter writes it.
pub const DOMAIN: &CStr = c"gn.transpile";
/// The C API version the library asks for (ONNX Runtime 1.17 and later provide it).
const API_VERSION: u32 = 17;

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
const BLOCK: usize = 1024;

impl Kernel {
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
    unsafe fn run_block(&self, x: &[f32], out: *mut f32, per_step: usize, block: usize, units: &[f32], spatial: usize) {
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

/// The ops of the library: the op's C table first, so that ONNX Runtime's pointer to the
/// table is a pointer to the op.
#[repr(C)]
struct Op {
    table: OrtCustomOp,
    name: &'static CStr,
    group: bool,
    direct: bool,
    /// A second input scales θ per channel.
    per_channel: bool,
}

// SAFETY: the tables hold function pointers and plain numbers only, and are never written.
unsafe impl Sync for Op {}

const fn op(name: &'static CStr, group: bool, direct: bool, per_channel: bool) -> Op {
    // SAFETY: every field of the table is an integer or an optional function pointer, for
    // which all-zero bytes are 0 and None (fields newer than `API_VERSION` stay so).
    let zeroed: OrtCustomOp = unsafe { std::mem::zeroed() };
    Op {
        table: OrtCustomOp {
            version: API_VERSION,
            GetName: Some(get_name),
            GetExecutionProviderType: Some(get_provider),
            GetInputType: Some(get_type),
            GetInputTypeCount: Some(get_input_count),
            GetOutputType: Some(get_type),
            GetOutputTypeCount: Some(get_one),
            GetInputCharacteristic: Some(get_required),
            GetOutputCharacteristic: Some(get_required),
            GetInputMemoryType: Some(get_memory_type),
            GetVariadicInputMinArity: Some(get_min_arity),
            GetVariadicInputHomogeneity: Some(get_homogeneity),
            GetVariadicOutputMinArity: Some(get_min_arity),
            GetVariadicOutputHomogeneity: Some(get_homogeneity),
            CreateKernelV2: Some(create_kernel),
            KernelComputeV2: Some(compute),
            KernelDestroy: Some(destroy_kernel),
            GetStartVersion: Some(get_start_version),
            GetEndVersion: Some(get_end_version),
            ..zeroed
        },
        name,
        group,
        direct,
        per_channel,
    }
}

static OPS: [Op; 8] = [
    op(c"GroupNeuron", true, false, false),
    op(c"IFNeuron", false, false, false),
    op(c"GroupNeuronDirect", true, true, false),
    op(c"IFNeuronDirect", false, true, false),
    op(c"GroupNeuronPerChannel", true, false, true),
    op(c"IFNeuronPerChannel", false, false, true),
    op(c"GroupNeuronPerChannelDirect", true, true, true),
    op(c"IFNeuronPerChannelDirect", false, true, true),
];

/// The entry point ONNX Runtime calls when the library is registered with a session.
///
/// # Safety
/// Called by ONNX Runtime with valid session options and its API base.
#[no_mangle]
pub unsafe extern "C" fn RegisterCustomOps(options: *mut OrtSessionOptions, base: *const OrtApiBase) -> *mut OrtStatus {
    let api = ((*base).GetApi)(API_VERSION);
    if api.is_null() {
        // An ONNX Runtime older than 1.17: register nothing, and the model's functions run.
        return ptr::null_mut();
    }
    let api = &*api;
    let mut domain = ptr::null_mut();
    if let Some(status) = check((api.CreateCustomOpDomain)(DOMAIN.as_ptr(), &mut domain)) {
        return status;
    }
    for op in &OPS {
        if let Some(status) = check((api.CustomOpDomain_Add)(domain, &op.table)) {
            return status;
        }
    }
    // The domain must outlive every session made with these options: it is never freed.
    check((api.AddCustomOpDomain)(options, domain)).unwrap_or(ptr::null_mut())
}

fn check(status: OrtStatusPtr) -> Option<*mut OrtStatus> {
    (!status.0.is_null()).then_some(status.0)
}

fn error(api: &OrtApi, message: &str) -> OrtStatusPtr {
    let text: Vec<u8> = message.bytes().filter(|&b| b != 0).chain([0]).collect();
    // SAFETY: a NUL-terminated message; ONNX Runtime copies it.
    unsafe { (api.CreateStatus)(OrtErrorCode::ORT_FAIL, text.as_ptr().cast()) }
}

unsafe fn this(op: *const OrtCustomOp) -> &'static Op {
    &*op.cast::<Op>()
}

unsafe extern "system" fn get_name(op: *const OrtCustomOp) -> *const c_char {
    this(op).name.as_ptr()
}

unsafe extern "system" fn get_provider(_: *const OrtCustomOp) -> *const c_char {
    c"CPUExecutionProvider".as_ptr()
}

unsafe extern "system" fn get_type(_: *const OrtCustomOp, _: usize) -> ONNXTensorElementDataType {
    ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
}

unsafe extern "system" fn get_one(_: *const OrtCustomOp) -> usize {
    1
}

unsafe extern "system" fn get_input_count(op: *const OrtCustomOp) -> usize {
    1 + this(op).per_channel as usize
}

unsafe extern "system" fn get_required(_: *const OrtCustomOp, _: usize) -> OrtCustomOpInputOutputCharacteristic {
    OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED
}

unsafe extern "system" fn get_memory_type(_: *const OrtCustomOp, _: usize) -> OrtMemType {
    OrtMemType::OrtMemTypeDefault
}

unsafe extern "system" fn get_min_arity(_: *const OrtCustomOp) -> i32 {
    1
}

unsafe extern "system" fn get_homogeneity(_: *const OrtCustomOp) -> i32 {
    0
}

unsafe extern "system" fn get_start_version(_: *const OrtCustomOp) -> i32 {
    1
}

unsafe extern "system" fn get_end_version(_: *const OrtCustomOp) -> i32 {
    i32::MAX
}

/// A kernel and the API it calls back into.
struct Instance {
    kernel: Kernel,
    /// The op's name and whether it reads θ per channel.
    op: &'static Op,
    api: &'static OrtApi,
}

unsafe extern "system" fn create_kernel(
    op: *const OrtCustomOp,
    api: *const OrtApi,
    info: *const OrtKernelInfo,
    out: *mut *mut c_void,
) -> OrtStatusPtr {
    let (op, api) = (this(op), &*api);
    let float = |name: &CStr| -> Result<f32, OrtStatusPtr> {
        let mut v = 0f32;
        match check((api.KernelInfoGetAttribute_float)(info, name.as_ptr(), &mut v)) {
            None => Ok(v),
            Some(s) => Err(OrtStatusPtr(s)),
        }
    };
    let int = |name: &CStr| -> Result<i64, OrtStatusPtr> {
        let mut v = 0i64;
        match check((api.KernelInfoGetAttribute_int64)(info, name.as_ptr(), &mut v)) {
            None => Ok(v),
            Some(s) => Err(OrtStatusPtr(s)),
        }
    };
    let read = || -> Result<Kernel, OrtStatusPtr> {
        let theta_gn = if op.group { float(c"theta_gn")? } else { float(c"theta")? };
        let tau = if op.group { int(c"tau")? } else { 1 };
        let timesteps = int(c"timesteps")?;
        let v_init = float(c"v_init")?;
        let valid = theta_gn.is_finite()
            && theta_gn > 0.0
            && v_init.is_finite()
            && (1..=1 << 20).contains(&tau)
            && (1..=1 << 20).contains(&timesteps);
        if !valid {
            return Err(error(
                api,
                &format!(
                    "{}: θ = {theta_gn}, τ = {tau}, T = {timesteps}, v(0) = {v_init}: out of range",
                    op.name.to_string_lossy()
                ),
            ));
        }
        let timesteps = timesteps as usize;
        Ok(Kernel { theta_gn, tau: tau as f32, u_init: v_init / theta_gn, timesteps, direct: op.direct })
    };
    match read() {
        Ok(kernel) => {
            *out = Box::into_raw(Box::new(Instance { kernel, op, api })).cast();
            OrtStatusPtr::default()
        }
        Err(status) => status,
    }
}

unsafe extern "system" fn destroy_kernel(kernel: *mut c_void) {
    if !kernel.is_null() {
        drop(Box::from_raw(kernel.cast::<Instance>()));
    }
}

unsafe extern "system" fn compute(kernel: *mut c_void, context: *mut OrtKernelContext) -> OrtStatusPtr {
    let instance = &*kernel.cast::<Instance>();
    match run(instance, context) {
        Ok(()) => OrtStatusPtr::default(),
        Err(status) => status,
    }
}

/// The shape of an input tensor.
unsafe fn dims_of(api: &OrtApi, value: *const OrtValue) -> Result<Vec<i64>, OrtStatusPtr> {
    let ok = |s: OrtStatusPtr| check(s).map_or(Ok(()), |s| Err(OrtStatusPtr(s)));
    let mut info = ptr::null_mut();
    ok((api.GetTensorTypeAndShape)(value, &mut info))?;
    let mut rank = 0usize;
    let mut dims = Vec::new();
    let shape = ok((api.GetDimensionsCount)(info, &mut rank)).and_then(|()| {
        dims = vec![0i64; rank];
        ok((api.GetDimensions)(info, dims.as_mut_ptr(), rank))
    });
    (api.ReleaseTensorTypeAndShapeInfo)(info);
    shape.map(|()| dims)
}

/// The unit of each channel of a per-channel layer (θ_GN · θ_c), from its second input,
/// which must be `[1, C, 1, …]` for a current of shape `dims`.
unsafe fn channel_units(
    instance: &Instance,
    context: *mut OrtKernelContext,
    dims: &[i64],
) -> Result<Vec<f32>, OrtStatusPtr> {
    let (api, name) = (instance.api, instance.op.name.to_string_lossy());
    let ok = |s: OrtStatusPtr| check(s).map_or(Ok(()), |s| Err(OrtStatusPtr(s)));
    let mut theta: *const OrtValue = ptr::null();
    ok((api.KernelContext_GetInput)(context, 1, &mut theta))?;
    if theta.is_null() {
        return Err(error(api, &format!("{name}: the thresholds per channel (input 2) are missing")));
    }
    let shape = dims_of(api, theta)?;
    let fits = shape.len() == dims.len()
        && dims.len() >= 2
        && shape[1] == dims[1]
        && shape.iter().enumerate().all(|(i, &d)| i == 1 || d == 1);
    if !fits {
        return Err(error(
            api,
            &format!("{name}: the thresholds per channel have shape {shape:?}; for a current of shape {dims:?} they must be [1, C, 1, …] with C = the current's axis 1"),
        ));
    }
    let channels = usize::try_from(dims[1]).unwrap_or(0);
    let mut data = ptr::null_mut();
    ok((api.GetTensorMutableData)(theta.cast_mut(), &mut data))?;
    if channels == 0 {
        return Ok(vec![instance.kernel.theta_gn]);
    }
    let theta = std::slice::from_raw_parts(data.cast::<f32>(), channels);
    if let Some(bad) = theta.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
        return Err(error(api, &format!("{name}: a channel's θ factor is {bad}, not a positive finite number")));
    }
    Ok(theta.iter().map(|&t| instance.kernel.theta_gn * t).collect())
}

unsafe fn run(instance: &Instance, context: *mut OrtKernelContext) -> Result<(), OrtStatusPtr> {
    let (kernel, api) = (&instance.kernel, instance.api);
    let ok = |s: OrtStatusPtr| check(s).map_or(Ok(()), |s| Err(OrtStatusPtr(s)));
    let mut input: *const OrtValue = ptr::null();
    ok((api.KernelContext_GetInput)(context, 0, &mut input))?;
    let mut dims = dims_of(api, input)?;
    let rank = dims.len();
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?));
    let Some(count) = count else { return Err(error(api, "the input's shape is not a tensor shape")) };
    let units = if instance.op.per_channel { channel_units(instance, context, &dims)? } else { vec![kernel.theta_gn] };
    // The size of one channel of one sample (1 for a current of rank 2 or less).
    let spatial = dims.iter().skip(2).map(|&d| d.max(1) as usize).product::<usize>().max(1);
    let rows = dims.first().copied().unwrap_or(1) as usize;
    let (out_count, per_step) = if kernel.direct {
        // [N, …] in, [T·N, …] out.
        let sizes = (count.checked_mul(kernel.timesteps), rows.checked_mul(kernel.timesteps));
        let (Some(out_count), Some(out_rows)) = sizes else {
            return Err(error(api, "the output's size overflows"));
        };
        match dims.first_mut() {
            Some(d) => *d = out_rows as i64,
            None => return Err(error(api, "the current has no axis 0 (it must be [N, …])")),
        }
        (out_count, count)
    } else {
        (count, count / kernel.timesteps)
    };
    if !kernel.direct && rows % kernel.timesteps != 0 {
        return Err(error(
            api,
            &format!("axis 0 has {rows} rows, not a multiple of T = {} (the input must be [T·N, …])", kernel.timesteps),
        ));
    }
    let mut output = ptr::null_mut();
    ok((api.KernelContext_GetOutput)(context, 0, dims.as_ptr(), rank, &mut output))?;
    if out_count == 0 {
        return Ok(());
    }
    let (mut x, mut y) = (ptr::null_mut(), ptr::null_mut());
    ok((api.GetTensorMutableData)(input.cast_mut(), &mut x))?;
    ok((api.GetTensorMutableData)(output, &mut y))?;
    let x = std::slice::from_raw_parts(x.cast::<f32>(), count);
    let job = Job { kernel, x, out: y.cast::<f32>(), per_step, units: &units, spatial };
    let job_ptr = ptr::from_ref(&job).cast_mut().cast::<c_void>();
    let blocks = kernel.blocks(per_step);
    if blocks < 2 {
        for index in 0..blocks {
            block(job_ptr, index);
        }
        return Ok(());
    }
    // On the session's intra-op threads, a block per call.
    ok((api.KernelContext_ParallelFor)(context, block, blocks, 0, job_ptr))
}

/// One layer's run, shared by the threads that run its blocks.
struct Job<'a> {
    kernel: &'a Kernel,
    x: &'a [f32],
    out: *mut f32,
    per_step: usize,
    units: &'a [f32],
    spatial: usize,
}

unsafe extern "C" fn block(job: *mut c_void, index: usize) {
    let job = &*job.cast::<Job>();
    // SAFETY: `out` is the output tensor, of x's length; each index is one block, run once.
    job.kernel.run_block(job.x, job.out, job.per_step, index, job.units, job.spatial);
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
}
