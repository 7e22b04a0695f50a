#!/usr/bin/env python3
"""Regenerate the test fixtures in this folder.

Needs: scikit-image (sample photos), pillow, numpy, onnxruntime, and the exported
model models/mobilenetv2.onnx (see models/PROVENANCE.md).

  python crates/vision/tests/data/make_fixtures.py [--model models/mobilenetv2.onnx]
"""
import argparse
import hashlib
import json
import pathlib

import numpy as np
import onnxruntime as ort
from PIL import Image
from skimage import data

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[3]
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
INPUT_SIZE = 224


def preprocess(img: Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """torchvision Resize(256) + CenterCrop(224) + ToTensor + Normalize, as NCHW float32."""
    short = round(size * 256 / 224)
    w, h = img.size
    # torchvision: shorter side -> `short`, longer side truncated with int().
    nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize((nw, nh), Image.BILINEAR)  # no-op copy when the size already matches
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    x = (np.asarray(img, np.float32) / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def f32(v) -> float:
    """Shortest decimal that round-trips as float32 (keeps the JSON compact and exact)."""
    return float(str(np.float32(v)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=pathlib.Path, default=REPO / "models" / "mobilenetv2.onnx")
    ap.add_argument("--labels", type=pathlib.Path, default=REPO / "models" / "imagenet_labels.txt")
    args = ap.parse_args()

    # Real photos from scikit-image's bundled sample data, re-encoded as baseline JPEG q90.
    photos = {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut()}
    for name, arr in photos.items():
        Image.fromarray(arr).convert("RGB").save(HERE / f"{name}.jpg", quality=90)

    # Variants the decoder must get right: CMYK (Adobe, as Photoshop writes it), EXIF orientation
    # 6 (pixels stored rotated 90° counter-clockwise, displayed upright) and progressive coding.
    chelsea = Image.fromarray(photos["chelsea"]).convert("RGB")
    chelsea.convert("CMYK").save(HERE / "chelsea_cmyk.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    chelsea.transpose(Image.Transpose.ROTATE_90).save(HERE / "chelsea_exif6.jpg", quality=90, exif=exif)
    chelsea.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(HERE / "chelsea_palette.png")
    Image.fromarray(photos["coffee"]).convert("RGB").save(HERE / "coffee_progressive.jpg", quality=90, progressive=True)

    # 256x256 stretch of chelsea: torchvision preprocessing at 224 reduces to a 16px centre crop.
    chelsea_256 = Image.fromarray(photos["chelsea"]).convert("RGB").resize((256, 256), Image.BILINEAR)
    chelsea_256.save(HERE / "chelsea_256.png")

    model_bytes = args.model.read_bytes()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    x = preprocess(Image.open(HERE / "chelsea_256.png").convert("RGB"))
    features, logits = sess.run(["features", "logits"], {"input": x})
    logits, features = logits[0], features[0]

    labels = args.labels.read_text(encoding="utf-8").splitlines()
    z = logits.astype(np.float64)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    top5 = [[int(i), labels[i], f32(probs[i])] for i in np.argsort(-z, kind="stable")[:5]]

    out = {
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "image": "chelsea_256.png",
        "onnxruntime_version": ort.__version__,
        "input_size": INPUT_SIZE,
        "logits": [f32(v) for v in logits],
        "features_first16": [f32(v) for v in features[:16]],
        "top5": top5,
    }
    (HERE / "chelsea_256.logits.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print("top5:", top5)


if __name__ == "__main__":
    main()
