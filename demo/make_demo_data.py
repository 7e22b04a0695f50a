"""Regenerates the demo's data: `python demo/make_demo_data.py` from the repo root.

Needs scikit-learn (for `load_digits`), Pillow and numpy; the outputs are committed, so the
demo itself needs none of them.

* `dataset/<digit>/<n>.png`: 30 images per digit from scikit-learn's 8x8 handwritten digits,
  scaled 0..16 -> 0..255 and upscaled to 32x32 (bilinear); `n` is the index in `load_digits()`.
* `new-images/digit-<d>-<n>.png`: one more image per digit, not in the dataset, classified by
  the trained model at the end of the demo.
* `photos/*.jpg`: copies of the CC0 / public-domain scikit-image photos in
  `crates/vision/tests/data`, classified with the ImageNet model before training.
"""
import pathlib
import shutil

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

PER_CLASS = 30
HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "crates" / "vision" / "tests" / "data"


def main():
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    for sub in ("dataset", "new-images", "photos"):
        shutil.rmtree(HERE / sub, ignore_errors=True)
    rng = np.random.default_rng(0)
    for digit in range(10):
        (index,) = np.nonzero(digits.target == digit)
        chosen = rng.choice(index, PER_CLASS + 1, replace=False)
        for n, i in enumerate(chosen):
            if n < PER_CLASS:
                path = HERE / "dataset" / str(digit) / f"{i:04d}.png"
            else:
                path = HERE / "new-images" / f"digit-{digit}-{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).resize((32, 32), Image.Resampling.BILINEAR).save(path, optimize=True)
    (HERE / "photos").mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg"):
        shutil.copyfile(FIXTURES / name, HERE / "photos" / name)


if __name__ == "__main__":
    main()
