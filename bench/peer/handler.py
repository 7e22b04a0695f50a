"""The usual Python Lambda for S3 uploads, the peer of the Rust `upload-trigger`.

S3 ObjectCreated on `images/<path>` -> classify with MobileNetV2 (onnxruntime) -> PUT
`predictions/<path>.json` to RESULTS_BUCKET. Handler: `handler.handler`.

Environment:
  RESULTS_BUCKET      where predictions go (required)
  AWS_ENDPOINT_URL    S3 endpoint (optional; e.g. a local moto server)
  PEER_MODEL          ONNX model (default: <repo>/models/mobilenetv2.onnx)
  PEER_LABELS         labels, one a line (default: <repo>/models/imagenet_labels.txt)
  PEER_PILLOW_DRAFT   1 = let libjpeg decode JPEGs at reduced scale (the optimised variant)
plus the credentials and region boto3 reads (AWS_ACCESS_KEY_ID, ..., AWS_REGION).

Unlike the Rust function it does not look for an existing prediction first, does not read
models/current.json (ImageNet only) and writes unconditionally: plain user code.
"""
import json
import os
import urllib.parse

import boto3
from botocore.config import Config

import peer

# Cold start: once per container.
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
    config=Config(s3={"addressing_style": "path"}),
)
session = peer.open_session(os.environ.get("PEER_MODEL", peer.DEFAULT_MODEL))
labels = peer.load_labels(os.environ.get("PEER_LABELS", peer.DEFAULT_LABELS))
RESULTS_BUCKET = os.environ["RESULTS_BUCKET"]
DRAFT = os.environ.get("PEER_PILLOW_DRAFT") == "1"


def handler(event, context):
    done = 0
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        if not key.startswith("images/"):
            print(json.dumps({"message": "ignored", "key": key}))
            continue
        obj = s3.get_object(Bucket=bucket, Key=key)
        data = obj["Body"].read()
        result = peer.classify(session, labels, data, draft=DRAFT)
        document = {
            "source_key": key,
            "source_etag": (record["s3"]["object"].get("eTag") or obj["ETag"]).strip('"'),
            "model_id": "imagenet",
            **result,
        }
        s3.put_object(
            Bucket=RESULTS_BUCKET,
            Key="predictions/" + key.removeprefix("images/") + ".json",
            Body=json.dumps(document, indent=2).encode(),
            ContentType="application/json",
        )
        print(json.dumps({"message": "predicted", "key": key, "label": result["top"][0]["label"]}))
        done += 1
    return {"records": done}
