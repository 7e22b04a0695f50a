"""Image classification the way the usual Python Lambda does it: Pillow, numpy, onnxruntime.

Shared by `handler.py` (the S3-triggered Lambda) and `classify.py` (the local CLI), so both run
one implementation. The transform is torchvision's ImageNet eval recipe:

  Resize(256)      shorter side to 256, the longer one int(256 * long / short); Pillow bilinear,
                   which is antialiased (torchvision on a PIL image calls exactly this)
  CenterCrop(224)  offset int(round((length - 224) / 2)), Python's round (half to even)
  ToTensor         HWC uint8 -> CHW float32 in [0, 1]
  Normalize        ImageNet mean/std

`draft=True` is the optimised variant: for a JPEG, `Image.draft` lets libjpeg decode at 1/2, 1/4
or 1/8 scale in the DCT domain, as small as possible but no smaller than the size the resize
needs (what the Rust decoder does). Off by default: the usual peer decodes at full size.
"""
import io
import pathlib
import time

import numpy as np
import onnxruntime as ort
from PIL import ExifTags, Image, ImageOps

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "mobilenetv2.onnx"
DEFAULT_LABELS = REPO / "models" / "imagenet_labels.txt"

RESIZE = 256
CROP = 224
TOP_K = 5
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def open_session(path=DEFAULT_MODEL):
    """CPU session, 1 intra-op and 1 inter-op thread, sequential, all graph optimisations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def load_labels(path=DEFAULT_LABELS):
    labels = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    if len(labels) != 1000:
        raise ValueError(f"{path}: expected 1000 labels, found {len(labels)}")
    return labels


def resized_size(width, height, short=RESIZE):
    """torchvision `Resize(short)`: (width, height) with the shorter side `short`."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def decode(data, draft=False):
    """Bytes -> (RGB image, upright, maybe DCT-scaled; its full-resolution upright (w, h))."""
    img = Image.open(io.BytesIO(data))
    width, height = img.size
    if img.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):  # rotated by 90 degrees
        width, height = height, width
    if draft and img.format == "JPEG":
        img.draft("RGB", resized_size(*img.size))
    img = ImageOps.exif_transpose(img).convert("RGB")
    return img, (width, height)


def preprocess(img):
    """RGB image -> float32 [1, 3, 224, 224]."""
    w, h = resized_size(*img.size)
    img = img.resize((w, h), Image.BILINEAR)
    top = int(round((h - CROP) / 2.0))
    left = int(round((w - CROP) / 2.0))
    x = np.asarray(img, dtype=np.float32)[top : top + CROP, left : left + CROP] / 255.0
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[np.newaxis])


def infer(session, x):
    """The ImageNet logits [1000]; fetches both outputs, as the Rust backbone does."""
    _features, logits = session.run(["features", "logits"], {"input": x})
    return logits[0]


def top_k(logits, labels, k=TOP_K):
    """Softmax, then the k most probable classes, best first (ties: lower index first)."""
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[:k]
    return [{"label": labels[i], "index": int(i), "score": float(p[i])} for i in order]


def classify(session, labels, data, draft=False, k=TOP_K):
    """Encoded image bytes -> {top, width, height, timings_ms}."""
    t0 = time.perf_counter()
    img, (width, height) = decode(data, draft)
    t1 = time.perf_counter()
    x = preprocess(img)
    t2 = time.perf_counter()
    logits = infer(session, x)
    t3 = time.perf_counter()
    return {
        "top": top_k(logits, labels, k),
        "width": width,
        "height": height,
        "timings_ms": {
            "decode_ms": (t1 - t0) * 1000,
            "preprocess_ms": (t2 - t1) * 1000,
            "inference_ms": (t3 - t2) * 1000,
        },
    }
