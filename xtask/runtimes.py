"""The runtime matrix of `cargo xtask verify`: each emitted model on ONNX Runtime,
onnx.reference and OpenVINO (its default precision, and float32 forced), against ONNX
Runtime on the standard form. A runtime that refuses a model is a result, not an error.

    python runtimes.py JOBS.json RESULTS.json

JOBS.json: [{"model": name, "form": form, "file": path, "reference": path, "inputs": npy}]
"""

import json
import sys

import numpy as np


def onnxruntime_run(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def reference_run(path, x):
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(path)
    return ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x})[0]


def openvino_run(hint):
    def run(path, x):
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
        compiled = core.compile_model(core.read_model(path), "CPU", config)
        return compiled(x)[compiled.output(0)]

    return run


RUNTIMES = [
    ("ONNX Runtime", onnxruntime_run),
    ("onnx.reference", reference_run),
    ("OpenVINO (default precision)", openvino_run(None)),
    ("OpenVINO (f32 hint)", openvino_run("f32")),
]


def main():
    jobs = json.load(open(sys.argv[1]))
    results = []
    for job in jobs:
        x = np.load(job["inputs"])
        reference = onnxruntime_run(job["reference"], x)
        for runtime, run in RUNTIMES:
            row = {"model": job["model"], "form": job["form"], "runtime": runtime, "images": int(x.shape[0])}
            try:
                got = np.asarray(run(job["file"], x), dtype=np.float32)
                diff = np.abs(got - reference)
                row |= {
                    "runs": True,
                    "max_abs_diff": float(diff.max()),
                    "relative_mse": float((diff**2).mean() / max((reference**2).mean(), 1e-30)),
                    "top1_flips": int((got.argmax(1) != reference.argmax(1)).sum()),
                    "images_differing": int((diff.reshape(len(x), -1).max(1) > 1e-5).sum()),
                }
            except Exception as e:  # a refusal is a result
                message = str(e).strip().splitlines()
                row |= {"runs": False, "error": (message[0] if message else type(e).__name__)[:200]}
            results.append(row)
            print(f"  {job['model']} {job['form']} on {runtime}: " + ("ok" if row["runs"] else "refused"), file=sys.stderr)
    json.dump(results, open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()
