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
//! each node runs [`gn_neuron::Kernel`], the neuron's one kernel loop (shared with the
//! tract kernels), which performs element for element, in f32, the operations of the
//! function body: the results are the function's, bit for bit. The op names, attribute
//! names, limits and the check of the thresholds per channel are gn-neuron's too.

use std::ffi::{c_char, c_void, CString};
use std::ptr;

use gn_neuron::{attr, Kernel, OpType};
use ort_sys::{
    ONNXTensorElementDataType, OrtApi, OrtApiBase, OrtCustomOp, OrtCustomOpInputOutputCharacteristic, OrtErrorCode,
    OrtKernelContext, OrtKernelInfo, OrtMemType, OrtSessionOptions, OrtStatus, OrtStatusPtr, OrtValue,
};

/// The C API version the library asks for (ONNX Runtime 1.17 and later provide it).
const API_VERSION: u32 = 17;

/// The ops of the library: the op's C table first, so that ONNX Runtime's pointer to the
/// table is a pointer to the op.
#[repr(C)]
struct Op {
    table: OrtCustomOp,
    op: OpType,
}

// SAFETY: the tables hold function pointers and plain numbers only, and are never written.
unsafe impl Sync for Op {}

const fn op(op: OpType) -> Op {
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
        op,
    }
}

static OPS: [Op; 8] = [
    op(OpType::ALL[0]),
    op(OpType::ALL[1]),
    op(OpType::ALL[2]),
    op(OpType::ALL[3]),
    op(OpType::ALL[4]),
    op(OpType::ALL[5]),
    op(OpType::ALL[6]),
    op(OpType::ALL[7]),
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
    let Ok(name) = CString::new(gn_neuron::DOMAIN) else { return ptr::null_mut() };
    if let Some(status) = check((api.CreateCustomOpDomain)(name.as_ptr(), &mut domain)) {
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
    this(op).op.c_name().as_ptr()
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
    this(op).op.inputs()
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
    /// The op's table, with its name and whether it reads θ per channel.
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
    let name = op.op.name();
    let float = |attribute: &str| -> Result<f32, OrtStatusPtr> {
        let attribute = CString::new(attribute).unwrap_or_default();
        let mut v = 0f32;
        match check((api.KernelInfoGetAttribute_float)(info, attribute.as_ptr(), &mut v)) {
            None => Ok(v),
            Some(s) => Err(OrtStatusPtr(s)),
        }
    };
    let int = |attribute: &str| -> Result<i64, OrtStatusPtr> {
        let attribute = CString::new(attribute).unwrap_or_default();
        let mut v = 0i64;
        match check((api.KernelInfoGetAttribute_int64)(info, attribute.as_ptr(), &mut v)) {
            None => Ok(v),
            Some(s) => Err(OrtStatusPtr(s)),
        }
    };
    let read = || -> Result<Kernel, OrtStatusPtr> {
        let theta_gn = float(op.op.unit_attribute())?;
        let tau = if op.op.group { int(attr::TAU)? } else { 1 };
        let timesteps = int(attr::TIMESTEPS)?;
        let v_init = float(attr::V_INIT)?;
        Kernel::new(theta_gn, tau, v_init, timesteps, op.op.direct)
            .map_err(|reason| error(api, &format!("{name}: {reason}")))
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
    let (api, name) = (instance.api, instance.op.op.name());
    let ok = |s: OrtStatusPtr| check(s).map_or(Ok(()), |s| Err(OrtStatusPtr(s)));
    let mut theta: *const OrtValue = ptr::null();
    ok((api.KernelContext_GetInput)(context, 1, &mut theta))?;
    if theta.is_null() {
        return Err(error(api, &format!("{name}: the thresholds per channel (input 2) are missing")));
    }
    let shape = dims_of(api, theta)?;
    let sizes = |dims: &[i64]| dims.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect::<Vec<_>>();
    let (current, shape) = (sizes(dims), sizes(&shape));
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let Some(count) = count.filter(|&c| Some(c) == current.get(1).copied()) else {
        // A shape whose size is not the current's channel count: the check names it.
        return instance
            .kernel
            .channel_units(&current, &shape, &[])
            .map_err(|reason| error(api, &format!("{name}: {reason}")));
    };
    let mut data = ptr::null_mut();
    ok((api.GetTensorMutableData)(theta.cast_mut(), &mut data))?;
    let factors = if count == 0 { &[][..] } else { std::slice::from_raw_parts(data.cast::<f32>(), count) };
    instance.kernel.channel_units(&current, &shape, factors).map_err(|reason| error(api, &format!("{name}: {reason}")))
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
    let units =
        if instance.op.op.per_channel { channel_units(instance, context, &dims)? } else { vec![kernel.theta_gn] };
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
