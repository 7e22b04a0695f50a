#!/usr/bin/env python3
"""Classify local images with the Python peer's code (the analogue of `lambda-vision classify`).

  python bench/peer/classify.py [--draft] [--model PATH] [--top K] FILE...

One JSON line per file, in order: {"path", "top": [{label, index, score}], "width", "height",
"timings_ms": {decode_ms, preprocess_ms, inference_ms}}, or {"path", "error": {"kind",
"message"}} (exit status 1 if any file failed). The model is loaded once per run.
"""
import argparse
import json
import pathlib
import sys

import peer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=pathlib.Path, metavar="FILE")
    ap.add_argument("--draft", action="store_true", help="JPEG DCT-domain downscaling (Image.draft)")
    ap.add_argument("--model", type=pathlib.Path, default=peer.DEFAULT_MODEL)
    ap.add_argument("--labels", type=pathlib.Path, default=peer.DEFAULT_LABELS)
    ap.add_argument("--top", type=int, default=peer.TOP_K)
    args = ap.parse_args()

    session = peer.open_session(args.model)
    labels = peer.load_labels(args.labels)
    failed = False
    for path in args.files:
        try:
            line = {"path": str(path), **peer.classify(session, labels, path.read_bytes(), args.draft, args.top)}
        except Exception as e:  # one bad file does not stop the others
            failed = True
            line = {"path": str(path), "error": {"kind": type(e).__name__, "message": str(e)}}
        print(json.dumps(line), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
