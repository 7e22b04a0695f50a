#!/usr/bin/env python3
"""Baseline latency of the ONNX backbone in onnxruntime (CPU, 1 thread).

  python bench/onnxruntime_backbone.py [model.onnx] [--runs 200] [--warmup 10]

Prints one JSON line: {"runtime", "version", "median_ms", "p90_ms", "runs"}.
"""
import argparse
import json
import pathlib
import time

import numpy as np
import onnxruntime as ort

REPO = pathlib.Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", type=pathlib.Path, default=REPO / "models" / "mobilenetv2.onnx")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)  # fixed input

    for _ in range(args.warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)

    print(json.dumps({
        "runtime": "onnxruntime",
        "version": ort.__version__,
        "median_ms": round(float(np.median(times)), 3),
        "p90_ms": round(float(np.percentile(times, 90)), 3),
        "runs": args.runs,
    }))


if __name__ == "__main__":
    main()
