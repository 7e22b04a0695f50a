#!/usr/bin/env python3
"""Extract the 1000 ImageNet class names (torchvision/Caffe index order) from the
npm package @tensorflow-models/mobilenet@2.1.1, file dist/imagenet_classes.js
(Apache-2.0), into models/imagenet_labels.txt (one label per line, line i = class i).

Usage:
  python models/extract_labels.py                      # runs `npm pack` in a temp dir
  python models/extract_labels.py path/to/imagenet_classes.js
"""
import argparse
import hashlib
import pathlib
import re
import subprocess
import tarfile
import tempfile

PACKAGE = "@tensorflow-models/mobilenet@2.1.1"
MEMBER = "package/dist/imagenet_classes.js"
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "imagenet_labels.txt"

# One entry: `N: 'part' + 'part' ...` ; parts are single-quoted JS strings with \-escapes.
_ENTRY = re.compile(r"(\d+)\s*:\s*((?:'(?:[^'\\]|\\.)*'\s*\+?\s*)+)")
_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'")
_ESCAPE = re.compile(r"\\(.)")


def fetch_js() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        name = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(pathlib.Path(tmp) / name) as tar:
            return tar.extractfile(MEMBER).read()


def parse_labels(js: str) -> list:
    body = js[js.index("IMAGENET_CLASSES = {"):]
    labels = {}
    for m in _ENTRY.finditer(body):
        parts = [_ESCAPE.sub(r"\1", s) for s in _STRING.findall(m.group(2))]
        labels[int(m.group(1))] = "".join(parts)
    assert sorted(labels) == list(range(1000)), "expected keys 0..999"
    return [labels[i] for i in range(1000)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("js", nargs="?", type=pathlib.Path, help="local imagenet_classes.js (default: npm pack)")
    ap.add_argument("-o", "--output", type=pathlib.Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    raw = args.js.read_bytes() if args.js else fetch_js()
    labels = parse_labels(raw.decode("utf-8"))
    assert labels[285] == "Egyptian cat" and labels[967] == "espresso"
    args.output.write_text("\n".join(labels) + "\n", encoding="utf-8")
    print(f"source sha256 {hashlib.sha256(raw).hexdigest()}")
    print(f"wrote {args.output} (sha256 {hashlib.sha256(args.output.read_bytes()).hexdigest()})")


if __name__ == "__main__":
    main()
