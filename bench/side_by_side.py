#!/usr/bin/env python3
"""lambda-vision against the usual Python Lambda (Pillow + onnxruntime, 1 thread), in one go.

    pip install -r bench/requirements.txt
    python3 bench/side_by_side.py            # builds the release binaries first (cargo)

On the same inputs, on this machine, it measures and prints as ratios:
  (a) whole-process classify of a mixed set (the headline), of 12 MP JPEGs and of small photos:
      `lambda-vision classify` vs `bench/peer/classify.py`, the usual peer and the best peer
      (Pillow's draft mode: libjpeg-turbo decodes JPEGs at reduced scale);
  (b) backbone latency on the same tensor: tract vs onnxruntime 1 thread;
  (c) cold start, process exec -> first prediction written, then warm invocations: the
      `upload-trigger` Lambda binary vs the Python handler under awslambdaric (usual and draft), all served
      real S3 events by a Lambda Runtime API emulator (`runtime_api.py`) and talking to
      `local-s3` (an S3 server in its own process);
  (d) trainer throughput in images/s, the `trainer` Lambda binary on 1 core (`taskset`) and 2;
  (e) peak RSS of every process above (from wait4).
Results also go to `--out` (JSON). Figures are for this machine; nothing is asserted.
"""
import argparse
import copy
import io
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
import numpy as np
import onnxruntime as ort
from botocore.config import Config
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
BIN = REPO / "target" / "release"
sys.path.insert(0, str(REPO / "bench"))
from runtime_api import RuntimeApi  # noqa: E402

ACCESS_KEY = "lambda-vision-local"  # local_s3::ACCESS_KEY
SECRET_KEY = "lambda-vision-local-secret"
# The careful Python author's peer: Pillow's draft() (libjpeg-turbo's DCT-scaled decode).
BEST_PEER = "python peer, Pillow draft"
TIME = shutil.which("time", path="/usr/bin:/bin") or sys.exit("needs GNU time: apt-get install time")
PHOTOS = [REPO / "crates/vision/tests/data" / n for n in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")]


def run_rss(cmd, env=None, cwd=None):
    """Runs cmd; (wall seconds, peak RSS MiB, stdout bytes, stderr bytes).

    Peak RSS comes from GNU time, not from our own wait4: a child forked from this (large)
    Python process starts with our RSS as its high-water mark."""
    with tempfile.NamedTemporaryFile() as rss_file:
        started = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%M", "-o", rss_file.name] + cmd, env=env, cwd=cwd, capture_output=True)
        wall = time.perf_counter() - started
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
        peak_kib = int(pathlib.Path(rss_file.name).read_text().split()[-1])
    return wall, peak_kib / 1024, proc.stdout, proc.stderr


def make_inputs(folder):
    """Small photos as they are, and 12 MP JPEGs: upscaled photos (smooth, ~1 MB, kind to the
    decoder) and mosaics of photos at native resolution (camera-like detail, several MB)."""
    folder.mkdir(parents=True, exist_ok=True)
    small = []
    for photo in PHOTOS:
        for copy_index in range(4):
            path = folder / f"small-{copy_index}-{photo.name}"
            shutil.copy(photo, path)
            small.append(path)
    large = []
    images = [Image.open(p).convert("RGB") for p in PHOTOS]
    for index, image in enumerate(images):
        path = folder / f"12mp-upscaled-{index}.jpg"
        image.resize((4000, 3000), Image.BICUBIC).save(path, quality=90)
        large.append(path)
        mosaic = Image.new("RGB", (4000, 3000))
        tiles = [images[(index + k) % len(images)] for k in range(len(images))]
        x = y = k = 0
        while y < 3000:
            tile = tiles[k % len(tiles)]
            mosaic.paste(tile, (x, y))
            k += 1
            x += tile.width
            if x >= 4000:
                x, y = 0, y + max(t.height for t in tiles)
        path = folder / f"12mp-mosaic-{index}.jpg"
        mosaic.save(path, quality=92)
        large.append(path)
    return small, large


def top1_lines(out):
    return [json.loads(line)["top"][0]["index"] if "top" in json.loads(line) else None for line in out.decode().splitlines() if line.strip()]


def whole_process(files, repeats):
    """(a): each classifier over the whole set, `repeats` times; median wall, max RSS."""
    runs = {
        "lambda-vision": [str(BIN / "lambda-vision"), "classify", "--top", "5"],
        "python peer": [sys.executable, str(REPO / "bench/peer/classify.py")],
        "python peer, Pillow draft": [sys.executable, str(REPO / "bench/peer/classify.py"), "--draft"],
    }
    results = {}
    for name, cmd in runs.items():
        walls, rss, tops = [], [], None
        for _ in range(repeats):
            wall, peak, out, _ = run_rss(cmd + [str(f) for f in files])
            walls.append(wall)
            rss.append(peak)
            tops = top1_lines(out)
        results[name] = {"seconds": statistics.median(walls), "rss_mib": max(rss), "top1": tops}
    ours = results["lambda-vision"]
    agree = sum(a == b for a, b in zip(ours["top1"], results["python peer"]["top1"]))
    return results, agree


def backbone(workdir, runs):
    """(b): the same preprocessed tensor through tract and onnxruntime (1 thread)."""
    tensor_path = workdir / "tensor.f32"
    subprocess.run([str(BIN / "backbone"), "--write-tensor", str(tensor_path)], check=True)
    _, rss, out, _ = run_rss([str(BIN / "backbone"), "--tensor", str(tensor_path), "--runs", str(runs)])
    tract = json.loads(out)
    x = np.fromfile(tensor_path, dtype="<f4").reshape(1, 3, 224, 224)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    started = time.perf_counter()
    session = ort.InferenceSession(str(REPO / "models/mobilenetv2.onnx"), opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1000
    for _ in range(10):
        session.run(["features", "logits"], {"input": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        _, logits = session.run(["features", "logits"], {"input": x})
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    diff = float(np.abs(np.array(tract["logits"]) - logits[0]).max())
    return {
        "tract_ms": tract["median_ms"],
        "tract_load_ms": tract["load_ms"],
        "tract_rss_mib": rss,
        "onnxruntime_ms": times[len(times) // 2],
        "onnxruntime_load_ms": load_ms,
        "max_abs_logit_diff": diff,
    }


class LocalS3:
    """`local-s3` in its own process, so it is not counted in anyone's RSS."""

    def __init__(self, root):
        # In AWS, S3 does not run on the function's cores; here it shares them (niced, it starved
        # and the trainer waited on it: worse).
        self.proc = subprocess.Popen([str(BIN / "local-s3"), str(root)], stdout=subprocess.PIPE)
        self.endpoint = self.proc.stdout.readline().decode().strip()
        self.client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def close(self):
        self.proc.kill()
        self.proc.wait()


def lambda_env(s3, name, extra):
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "TZ": ":UTC", "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_LAMBDA_FUNCTION_NAME": name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/30/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
    }
    env.update(extra)
    return env


def s3_event(bucket, key, size, etag):
    event = json.loads((REPO / "events/image-upload.json").read_text())
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["s3"]["object"].update(key=key, size=size, eTag=etag)
    return event


def invoke(cmd, env, events, cwd=None, taskset=None):
    """Starts a Lambda runtime process against the emulator; returns (exec time, invocations,
    peak RSS MiB, log tail)."""
    if taskset:
        cmd = ["taskset", "-c", taskset] + cmd
    with RuntimeApi(events) as api:
        env = dict(env, AWS_LAMBDA_RUNTIME_API=api.address)
        log = tempfile.TemporaryFile()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            invocations = api.wait_all(timeout=1800)
            time.sleep(0.1)
            peak_mib = vm_hwm_mib(proc.pid)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    log.seek(0)
    return started, invocations, peak_mib, log.read()[-3000:].decode(errors="replace")


def vm_hwm_mib(pid):
    """The process's own peak RSS (it is idle in `next` now, as a Lambda between events)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def cold_start(workdir, small, large, repeats):
    """(c) and the upload trigger's RSS: a cold invocation (a small photo), then warm ones."""
    s3 = LocalS3(workdir / "s3-cold")
    try:
        for bucket in ("bench-input", "bench-results"):
            s3.client.create_bucket(Bucket=bucket)
        uploads = [("images/cold.jpg", small[0])] + [(f"images/warm/{p.name}", p) for p in small[1:6] + large]
        events = []
        for key, path in uploads:
            data = path.read_bytes()
            etag = s3.client.put_object(Bucket="bench-input", Key=key, Body=data)["ETag"].strip('"')
            events.append(s3_event("bench-input", key, len(data), etag))
        functions = {
            "lambda-vision": ([str(BIN / "upload-trigger")], None, {
                "INPUT_BUCKET": "bench-input", "RESULTS_BUCKET": "bench-results",
                "TRAINER_FUNCTION": "unused", "RUST_LOG": "warn"}),
            "python peer": ([sys.executable, "-m", "awslambdaric", "handler.handler"], REPO / "bench/peer", {
                "RESULTS_BUCKET": "bench-results", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
                "LAMBDA_TASK_ROOT": str(REPO / "bench/peer"), "_HANDLER": "handler.handler",
                "PYTHONPATH": str(REPO / "bench/peer")}),
        }
        functions[BEST_PEER] = (functions["python peer"][0], functions["python peer"][1],
                                dict(functions["python peer"][2], PEER_PILLOW_DRAFT="1"))
        results = {}
        for name, (cmd, cwd, extra) in functions.items():
            colds, inits, warm_small, warm_large, rss = [], [], [], [], []
            for _ in range(repeats):
                for item in s3.client.list_objects_v2(Bucket="bench-results").get("Contents", []):
                    s3.client.delete_object(Bucket="bench-results", Key=item["Key"])
                started, invocations, peak, log = invoke(cmd, lambda_env(s3, name, extra), copy.deepcopy(events), cwd)
                if any(i.outcome != "response" for i in invocations):
                    raise RuntimeError(f"{name}: an invocation failed:\n{log}")
                prediction = json.loads(s3.client.get_object(Bucket="bench-results", Key="predictions/cold.jpg.json")["Body"].read())
                assert prediction["top"], prediction
                colds.append((invocations[0].done_at - started) * 1000)
                inits.append((invocations[0].requested_at - started) * 1000)
                warm_small += [i.duration * 1000 for i in invocations[1:6]]
                warm_large += [i.duration * 1000 for i in invocations[6:]]
                rss.append(peak)
            results[name] = {
                "cold_ms": statistics.median(colds),
                "cold_ms_all": [round(c, 1) for c in colds],
                "init_ms": statistics.median(inits),
                "warm_small_ms": statistics.median(warm_small),
                "warm_12mp_ms": statistics.median(warm_large),
                "rss_mib": max(rss),
            }
        return results
    finally:
        s3.close()


def trainer(workdir, images_per_label, labels, repeats):
    """(d): a job over a generated dataset, one core vs two; images/s from the job's metrics."""
    s3 = LocalS3(workdir / "s3-train")
    try:
        s3.client.create_bucket(Bucket="bench-input")
        photos = [Image.open(p).convert("RGB") for p in PHOTOS]
        rng = np.random.default_rng(7)
        total = 0
        for label in range(labels):
            for index in range(images_per_label):
                photo = photos[(label + index) % len(photos)]
                w, h = photo.size
                box_w, box_h = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
                x, y = int(rng.integers(0, w - box_w + 1)), int(rng.integers(0, h - box_h + 1))
                crop = photo.crop((x, y, x + box_w, y + box_h)).resize((640, 480))
                buffer = io.BytesIO()
                crop.save(buffer, format="JPEG", quality=85)
                local = workdir / "dataset" / f"label-{label}" / f"{index}.jpg"
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(buffer.getvalue())
                s3.client.put_object(Bucket="bench-input", Key=f"datasets/bench/label-{label}/{index}.jpg", Body=buffer.getvalue())
                total += 1
        spec = {"dataset": "bench", "epochs": 5, "validation_split": 0.2}
        s3.client.put_object(Bucket="bench-input", Key="jobs/bench.json", Body=json.dumps(spec).encode())
        runs = {"1 worker": [], "2 workers": []}
        # Alternate 1 and 2 workers, so drift in the machine's speed hits both alike.
        for repeat in range(repeats):
            for name, cpus in (("1 worker", "0"), ("2 workers", "0,1")):
                bucket = f"bench-results-{repeat}-{len(runs[name])}-{cpus.replace(',', '')}"
                s3.client.create_bucket(Bucket=bucket)
                env = lambda_env(s3, "trainer", {
                    "INPUT_BUCKET": "bench-input", "RESULTS_BUCKET": bucket,
                    "TRAINER_FUNCTION": "trainer", "RUST_LOG": "warn"})
                started, invocations, peak, log = invoke(
                    [str(BIN / "trainer")], env, [{"job_id": "bench", "continuation": 0}], taskset=cpus)
                result = json.loads(s3.client.get_object(Bucket=bucket, Key="results/bench.json")["Body"].read())
                if result.get("status") != "succeeded":
                    raise RuntimeError(f"trainer: {result}\n{log}")
                metrics_key = result["model"]["prefix"].rstrip("/") + "/metrics.json"
                metrics = json.loads(s3.client.get_object(Bucket=bucket, Key=metrics_key)["Body"].read())
                extraction_s = metrics["timings"]["extraction_ms"] / 1000
                # The same images from local files, no S3: what extraction alone sustains.
                wall, _, _, _ = run_rss(["taskset", "-c", cpus, str(BIN / "lambda-vision"), "features",
                                         "--data", str(workdir / "dataset"), "--out", str(workdir / "features.npy")])
                runs[name].append({"extraction_s": extraction_s, "invocation_s": invocations[0].duration,
                                   "rss_mib": peak, "from_files_s": wall})
        results = {}
        for name, measured in runs.items():
            median = lambda field: statistics.median(m[field] for m in measured)  # noqa: E731
            results[name] = {
                "images": total,
                "extraction_s": median("extraction_s"),
                "images_per_s": total / median("extraction_s"),
                "images_per_s_all": [round(total / m["extraction_s"], 1) for m in measured],
                "from_files_images_per_s": total / median("from_files_s"),
                "invocation_s": median("invocation_s"),
                "rss_mib": max(m["rss_mib"] for m in measured),
            }
        return results
    finally:
        s3.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-build", action="store_true", help="use the binaries already in target/release")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbone-runs", type=int, default=200)
    parser.add_argument("--train-images-per-label", type=int, default=100)
    parser.add_argument("--out", default="target/side-by-side.json")
    parser.add_argument("--only", choices=["a", "b", "c", "d"], action="append")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "--locked", "-p", "lambda-vision-cli", "-p", "upload-trigger",
             "-p", "trainer", "-p", "local-s3", "-p", "lambda-vision-bench"],
            cwd=REPO, check=True)
    parts = set(args.only or "abcd")
    report = {"machine": f"{os.cpu_count()} CPUs", "onnxruntime": ort.__version__}
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as scratch:
        workdir = pathlib.Path(scratch)
        small, large = make_inputs(workdir / "inputs")
        sizes = [p.stat().st_size for p in large]
        print(f"inputs: {len(small)} small photos (451x300 to 512x512), {len(large)} 12 MP JPEGs "
              f"({min(sizes) // 1024}-{max(sizes) // 1024} KiB)")
        if "a" in parts:
            print("\n(a) whole-process classify (median of %d runs; wall time of the process, peak RSS)" % args.repeats)
            print("    ratios are the peer's time over ours: above 1 = lambda-vision faster")
            report["classify"] = {}
            # The headline is the mixed set: what a bucket of uploads looks like.
            for name, files in (("mixed", large + small), ("12 MP JPEGs", large), ("small photos", small)):
                results, agree = whole_process(files, args.repeats)
                ours = results["lambda-vision"]["seconds"]
                ratios = {runner: r["seconds"] / ours for runner, r in results.items() if runner != "lambda-vision"}
                report["classify"][name] = {"results": results, "top1_agree": agree, "images": len(files),
                                            "peer_time_over_ours": ratios}
                for runner, r in results.items():
                    ratio = "" if runner == "lambda-vision" else "peer/ours %.2f×" % ratios[runner]
                    print(f"  {name:<13} {runner:<26} {r['seconds'] * 1000:8.0f} ms  {r['seconds'] / len(files) * 1000:7.1f} ms/image"
                          f"  {r['rss_mib']:6.0f} MiB  {ratio}")
                print(f"  {name:<13} same top-1 as the peer: {agree} of {len(files)}")
            mixed = report["classify"]["mixed"]["peer_time_over_ours"]
            print(f"  headline (mixed set of {len(large)} × 12 MP + {len(small)} small): "
                  f"{mixed['python peer']:.2f}× the usual peer, {mixed[BEST_PEER]:.2f}× the best peer (Pillow draft)")
        if "b" in parts:
            b = backbone(workdir, args.backbone_runs)
            report["backbone"] = b
            print(f"\n(b) backbone 1×3×224×224, median of {args.backbone_runs}")
            print(f"  tract        {b['tract_ms']:7.2f} ms   (load {b['tract_load_ms']:.0f} ms, process RSS {b['tract_rss_mib']:.0f} MiB)")
            print(f"  onnxruntime  {b['onnxruntime_ms']:7.2f} ms   (load {b['onnxruntime_load_ms']:.0f} ms)")
            print(f"  tract / onnxruntime = {b['tract_ms'] / b['onnxruntime_ms']:.2f}×   max |Δlogit| = {b['max_abs_logit_diff']:.2e}")
        if "c" in parts:
            c = cold_start(workdir, small, large, args.repeats)
            report["lambda"] = c
            ours = c["lambda-vision"]
            print(f"\n(c) Lambda runtime emulator + local-s3: exec → first prediction written (median of {args.repeats}), then warm")
            for name, r in c.items():
                print(f"  {name:<26} cold {r['cold_ms']:7.1f} ms {r['cold_ms_all']} (first poll at {r['init_ms']:.0f} ms)  warm small {r['warm_small_ms']:6.1f} ms"
                      f"  warm 12 MP {r['warm_12mp_ms']:6.1f} ms  peak RSS {r['rss_mib']:5.0f} MiB")
            for name, peer in c.items():
                if name != "lambda-vision":
                    print(f"  vs {name:<26} cold start {peer['cold_ms'] / ours['cold_ms']:.1f}× faster; warm small {peer['warm_small_ms'] / ours['warm_small_ms']:.2f}×;"
                          f" warm 12 MP {peer['warm_12mp_ms'] / ours['warm_12mp_ms']:.2f}×")
        if "d" in parts:
            d = trainer(workdir, args.train_images_per_label, 3, args.repeats)
            report["trainer"] = d
            print(f"\n(d) trainer Lambda binary, extraction from local-s3 (median of {args.repeats}, alternating)")
            for name, r in d.items():
                print(f"  {name:<10} {r['images']} images in {r['extraction_s']:.1f} s = {r['images_per_s']:.1f} images/s {r['images_per_s_all']}"
                      f"  (invocation {r['invocation_s']:.1f} s, peak RSS {r['rss_mib']:.0f} MiB)")
            print(f"  2 workers / 1 worker = {d['2 workers']['images_per_s'] / d['1 worker']['images_per_s']:.2f}×")
            for name, r in d.items():
                print(f"  {name:<10} same images from local files (`lambda-vision features`, whole process): "
                      f"{r['from_files_images_per_s']:.1f} images/s → S3 run at {r['images_per_s'] / r['from_files_images_per_s']:.0%} of it")
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
