"""The runtime matrix of `cargo xtask verify`: each emitted model on ONNX Runtime,
onnx.reference and OpenVINO (its default precision, and float32 forced), against ONNX
Runtime. A runtime that refuses a model is a result, not an error.

    python runtimes.py JOBS.json RESULTS.json

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


RUNTIMES = [OnnxRuntime, Reference, openvino(None), openvino("f32")]


def states_of(path):
    import onnx

    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    return json.loads(meta["gn_transpile.state"])


def outputs(runtime, path, x, calls):
    """The readouts to compare: [logits] for the unrolled forms, one per call for the stateful one."""
    run = runtime(path)
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
    results = []
    for job in jobs:
        x = np.load(job["inputs"])
        calls = job.get("calls")
        reference_outputs = OnnxRuntime(job["reference"])({"input": x})
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
