"""The runtime matrix of `cargo xtask verify`: each emitted model on ONNX Runtime,
onnx.reference and OpenVINO (its default precision, and float32 forced), against ONNX
Runtime. A runtime that refuses a model is a result, not an error.

    python runtimes.py JOBS.json RESULTS.json LIBGN_ORT_OPS.so

JOBS.json: [{"model", "form", "file", "reference", "inputs", "calls"}]. The standard and
custom-op forms are compared with ONNX Runtime on `reference` (the standard model); the
stateful form runs `calls` calls, states fed back, against the first `calls` rows of
the `_anytime` output of `reference` (an unrolled anytime model) on ONNX Runtime.
"""

import json
import sys

import numpy as np


class OnnxRuntime:
    name = "ONNX Runtime"

    def __init__(self, path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def __call__(self, feed):
        return self.session.run(None, feed)


class OnnxRuntimeWithOps:
    """ONNX Runtime with the gn-ort-ops library registered: the custom-op form's nodes
    run as fused kernels (the other forms have no such nodes and run as before)."""

    name = "ONNX Runtime + gn-ort-ops"
    library = None

    def __init__(self, path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.register_custom_ops_library(self.library)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, feed):
        return self.session.run(None, feed)


class Reference:
    name = "onnx.reference"

    def __init__(self, path):
        import onnx
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(onnx.load(path))

    def __call__(self, feed):
        return self.evaluator.run(None, feed)


def openvino(hint):
    class OpenVino:
        name = "OpenVINO (f32 hint)" if hint else "OpenVINO (default precision)"

        def __init__(self, path):
            import openvino as ov

            core = ov.Core()
            config = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
            self.compiled = core.compile_model(core.read_model(path), "CPU", config)

        def __call__(self, feed):
            result = self.compiled(feed)
            return [result[o] for o in self.compiled.outputs]

    return OpenVino


RUNTIMES = [OnnxRuntime, OnnxRuntimeWithOps, Reference, openvino(None), openvino("f32")]


def states_of(path):
    import onnx

    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    return json.loads(meta["gn_transpile.state"])


def static_batch(path):
    """The batch a model's first input declares, or None when it is symbolic."""
    import onnx

    dim = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def in_batches(path, x, f):
    """f on x in chunks of the model's static batch (all of x if it has none); each of
    f's outputs concatenated along the batch axis (axis 1 for the anytime rows)."""
    b = static_batch(path) or len(x)
    parts = [f(x[i : i + b]) for i in range(0, len(x), b)]
    axis = [1 if np.ndim(o) > np.ndim(parts[0][0]) else 0 for o in parts[0]]
    return [np.concatenate([p[k] for p in parts], axis=axis[k]) for k in range(len(parts[0]))]


def outputs(runtime, path, x, calls):
    """The readouts to compare: [logits] for the unrolled forms, one per call for the stateful one."""
    run = runtime(path)
    return in_batches(path, x, lambda xb: outputs_of(run, path, xb, calls))


def outputs_of(run, path, x, calls):
    if calls is None:
        return [np.asarray(run({"input": x})[0], dtype=np.float32)]
    states = states_of(path)
    feed = {"input": x} | {s["input"]: np.full([len(x) if d == "N" else d for d in s["shape"]], s["init"], np.float32) for s in states}
    readouts = []
    for _ in range(calls):
        out = run(feed)
        readouts.append(np.asarray(out[0], dtype=np.float32))
        feed |= {s["input"]: np.asarray(v, dtype=np.float32) for s, v in zip(states, out[1:])}
    return readouts


def main():
    jobs = json.load(open(sys.argv[1]))
    OnnxRuntimeWithOps.library = sys.argv[3]
    results = []
    for job in jobs:
        x = np.load(job["inputs"])
        calls = job.get("calls")
        ref = OnnxRuntime(job["reference"])
        reference_outputs = in_batches(job["reference"], x, lambda xb: [np.asarray(o) for o in ref({"input": xb})])
        reference = [reference_outputs[0]] if calls is None else list(reference_outputs[1][:calls])
        for runtime in RUNTIMES:
            row = {"model": job["model"], "form": job["form"], "runtime": runtime.name, "images": int(x.shape[0])}
            try:
                got = outputs(runtime, job["file"], x, calls)
                diff = np.concatenate([np.abs(g - r).ravel() for g, r in zip(got, reference)])
                power = np.mean(np.concatenate([(r**2).ravel() for r in reference]))
                last, want = got[-1], reference[-1]
                row |= {
                    "runs": True,
                    "max_abs_diff": float(diff.max()),
                    "relative_mse": float((diff**2).mean() / max(power, 1e-30)),
                    "top1_flips": int((last.argmax(1) != want.argmax(1)).sum()),
                    "images_differing": int((np.abs(last - want).reshape(len(x), -1).max(1) > 1e-5).sum()),
                }
            except Exception as e:  # a refusal is a result
                message = str(e).strip().splitlines()
                row |= {"runs": False, "error": (message[0] if message else type(e).__name__)[:200]}
            results.append(row)
            print(f"  {job['model']} {job['form']} on {runtime.name}: " + ("ok" if row["runs"] else "refused"), file=sys.stderr)
    json.dump(results, open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()
