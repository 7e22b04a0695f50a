"""The SAM application as it is deployed, on this machine: Docker with the Lambda base image (or
its stand-in), moto for S3, SQS and SES v2 listening where containers reach it (and for Step
Functions, whose interpreter invokes the functions: tests/moto_sfn_server.py), the four
functions laid out exactly as `sam build` lays them out, and `sam local start-lambda` for the
trainer. Everything is driven through the SAM CLI with `--config-env local` (samconfig.toml), so
the commands here are the README's commands.

The suite plays `sam build`'s part from cargo's debug binaries (a release `sam build` takes about
20 minutes on 2 cores); set LAMBDA_VISION_SAM_BUILT=1 to test what a real `sam build
--config-env local` left in .aws-sam/build instead.
"""

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO / ".aws-sam" / "build"
FIXTURES = REPO / "crates" / "vision" / "tests" / "data"

# As samconfig.toml's [local] environment names them.
BRIDGE = "172.17.0.1"
MOTO_PORT = 5555
LAMBDA_PORT = 3001
MOTO_URL = f"http://{BRIDGE}:{MOTO_PORT}"
LAMBDA_URL = f"http://{BRIDGE}:{LAMBDA_PORT}"
INPUT = "lambda-vision-input-123456789012-us-east-1"
RESULTS = "lambda-vision-results-123456789012-us-east-1"
SENDER = "reports@example.com"

# Logical id in template.yaml → cargo binary.
FUNCTIONS = {
    "UploadTriggerFunction": "upload-trigger",
    "TrainerFunction": "trainer",
    "NotifierFunction": "notifier",
    "FailureRecorderFunction": "failure-recorder",
}

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "SAM_CLI_TELEMETRY": "0",
}


def sam_cli() -> str:
    """The SAM CLI: $SAM_CLI, `sam` on PATH, or the one .ci/validate-template installs."""
    candidates = [
        os.environ.get("SAM_CLI"),
        shutil.which("sam"),
        str(Path.home() / ".cache" / "lambda-vision" / "sam-cli" / "bin" / "sam"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("the SAM CLI is not installed: run .ci/validate-template once, or pip install aws-sam-cli")


def environment() -> dict:
    return {**os.environ, **CREDENTIALS}


def wait_for_port(host: str, port: int, seconds: float, process=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {host}:{port} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {host}:{port} after {seconds} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def lay_out_as_sam_build() -> None:
    """Writes .aws-sam/build as `sam build` does: one folder per function holding `bootstrap`,
    and the template with each CodeUri pointing at its folder."""
    subprocess.run(
        ["cargo", "build", "--locked", *sum((["-p", b] for b in FUNCTIONS.values()), [])],
        cwd=REPO,
        check=True,
    )
    if BUILD_DIR.exists():
        shutil.rmtree(BUILD_DIR)
    for logical_id, binary in FUNCTIONS.items():
        folder = BUILD_DIR / logical_id
        folder.mkdir(parents=True)
        source = REPO / "target" / "debug" / binary
        try:
            os.link(source, folder / "bootstrap")
        except OSError:
            shutil.copy2(source, folder / "bootstrap")
    lines = (REPO / "template.yaml").read_text().splitlines(keepends=True)
    current, replaced = None, 0
    for index, line in enumerate(lines):
        stripped = line.strip()
        if line.startswith("  ") and not line.startswith("   ") and stripped.endswith(":"):
            current = stripped[:-1]
        if stripped == "CodeUri: ." and current in FUNCTIONS:
            lines[index] = line.replace("CodeUri: .", f"CodeUri: {current}")
            replaced += 1
    assert replaced == len(FUNCTIONS), f"found {replaced} CodeUri entries, expected {len(FUNCTIONS)}"
    (BUILD_DIR / "template.yaml").write_text("".join(lines))


@pytest.fixture(scope="session")
def docker():
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("no Docker engine answers: start dockerd (see .ci/run)")
    subprocess.run([str(REPO / "tests" / "standin-image.sh")], check=True)


@pytest.fixture(scope="session")
def built():
    if os.environ.get("LAMBDA_VISION_SAM_BUILT") == "1":
        assert (BUILD_DIR / "template.yaml").exists(), "run `sam build --config-env local` first"
    else:
        lay_out_as_sam_build()


@contextlib.contextmanager
def serving(command: list, port: int, seconds: float, **popen):
    """Runs a server until the block ends (also when a test fails), once it listens on
    BRIDGE:port."""
    process = subprocess.Popen(command, **popen)
    try:
        wait_for_port(BRIDGE, port, seconds, process)
        yield
    finally:
        stop(process)


@pytest.fixture(scope="session")
def invoke_faults(tmp_path_factory) -> Path:
    """The fault file of tests/moto_sfn_server.py (`LV_INVOKE_FAULTS`): while it is absent,
    every Lambda invoke a state machine makes reaches the function."""
    return tmp_path_factory.mktemp("faults") / "invoke-faults.json"


@pytest.fixture(scope="session")
def moto_server(docker, invoke_faults, tmp_path_factory):
    """moto on the Docker bridge address (the host as a container sees it): moto's own server,
    started by tests/moto_sfn_server.py so that its Step Functions interpreter also executes
    state machines, their Lambda tasks invoking the functions through `sam local
    start-lambda`'s Invoke API (LAMBDA_URL) and their other AWS calls coming back here."""
    if importlib.util.find_spec("moto") is None:
        pytest.fail(f"pip install 'moto[server]==5.2.5' (for {sys.executable})")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    command = [
        sys.executable,
        str(REPO / "tests" / "moto_sfn_server.py"),
        "--lambda-endpoint",
        LAMBDA_URL,
        "-H",
        BRIDGE,
        "-p",
        str(MOTO_PORT),
    ]
    env = {**os.environ, "LV_INVOKE_FAULTS": str(invoke_faults)}
    with open(log, "wb") as output, serving(
        command, MOTO_PORT, 30, env=env, stdout=output, stderr=subprocess.STDOUT
    ):
        yield MOTO_URL


@pytest.fixture(scope="session")
def start_lambda(built, moto_server, tmp_path_factory):
    """`sam local start-lambda --config-env local`: the Invoke API the trainer is started
    through, and the way the tests deliver relayed notifications."""
    log = tmp_path_factory.mktemp("sam") / "start-lambda.log"
    command = [sam_cli(), "local", "start-lambda", "--config-env", "local"]
    try:
        with open(log, "wb") as output, serving(
            command, LAMBDA_PORT, 120, cwd=REPO, env=environment(), stdout=output, stderr=subprocess.STDOUT
        ):
            yield log
    finally:
        print(log.read_text(errors="replace")[-4000:])


def client(service: str, endpoint: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=BotoConfig(
            s3={"addressing_style": "path"},
            read_timeout=900,
            retries={"max_attempts": 1},
        ),
    )


class Stack:
    """moto reset to the stack's resources: two buckets whose notifications go to SQS queues,
    as the template's S3 events would go to the functions, and the verified SES sender."""

    def __init__(self, with_results_bucket: bool = True):
        self.s3 = client("s3", MOTO_URL)
        self.sqs = client("sqs", MOTO_URL)
        self.ses = client("sesv2", MOTO_URL)
        self.lambda_ = client("lambda", LAMBDA_URL)
        urllib.request.urlopen(urllib.request.Request(f"{MOTO_URL}/moto-api/reset", method="POST"))
        self.s3.create_bucket(Bucket=INPUT)
        if with_results_bucket:
            self.s3.create_bucket(Bucket=RESULTS)
        self.queues = {}
        for name in ("input-events", "results-events"):
            self.queues[name] = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        # The template's notification filters (crates/pipeline/tests/template.rs checks those
        # against the code's rules).
        self._notify(INPUT, "input-events", [("images/", None), ("jobs/", ".json")])
        if with_results_bucket:
            self._notify(RESULTS, "results-events", [("results/", ".json")])
        self.ses.create_email_identity(EmailIdentity=SENDER)

    def _notify(self, bucket, queue, filters):
        configurations = []
        for prefix, suffix in filters:
            rules = [{"Name": "prefix", "Value": prefix}]
            if suffix:
                rules.append({"Name": "suffix", "Value": suffix})
            configurations.append(
                {
                    "QueueArn": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": rules}},
                }
            )
        self.s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configurations}
        )

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=bucket, Key=key, Body=body)

    def get_json(self, bucket: str, key: str):
        return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
            return True
        except self.s3.exceptions.ClientError:
            return False

    def wait_for(self, bucket: str, key: str, seconds: float = 300):
        deadline = time.monotonic() + seconds
        while not self.exists(bucket, key):
            assert time.monotonic() < deadline, f"s3://{bucket}/{key} did not appear in {seconds} s"
            time.sleep(1)
        return self.get_json(bucket, key)

    def notifications(self, queue: str) -> list:
        """The S3 notifications moto queued since the last call, as a relay would deliver them
        to Lambda: moto omits `userIdentity` and `requestParameters`, which S3 always sends and
        the functions' event type requires, so the relay fills them in; moto's s3:TestEvent is
        dropped."""
        events = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.queues[queue], MaxNumberOfMessages=10
            ).get("Messages", [])
            if not messages:
                return events
            for message in messages:
                body = json.loads(message["Body"])
                self.sqs.delete_message(
                    QueueUrl=self.queues[queue], ReceiptHandle=message["ReceiptHandle"]
                )
                if "Records" not in body:
                    continue
                for record in body["Records"]:
                    record.setdefault("userIdentity", {})
                    record.setdefault("requestParameters", {})
                events.append(body)

    def invoke(self, function: str, event: dict) -> dict:
        """A synchronous invoke through `sam local start-lambda`."""
        response = self.lambda_.invoke(FunctionName=function, Payload=json.dumps(event).encode())
        return json.loads(response["Payload"].read() or b"null")

    def sent_emails(self) -> list:
        """Messages moto's SES accepted (simple and raw)."""
        with urllib.request.urlopen(f"{MOTO_URL}/moto-api/data.json") as response:
            data = json.loads(response.read())
        return [m for kind in ("Message", "RawMessage") for m in data.get("ses", {}).get(kind, [])]


def sam_local_invoke(function: str, event_file: str) -> dict:
    """The README's command, word for word; returns the function's response. `sam local invoke`
    exits 0 even when the function fails, so callers check the response for `errorType`."""
    completed = subprocess.run(
        [sam_cli(), "local", "invoke", "--config-env", "local", function, "-e", event_file],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    assert lines, f"no response on stdout; stderr:\n{completed.stderr[-4000:]}"
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"last line is not JSON: {lines[-1]!r}\nstderr:\n{completed.stderr[-4000:]}")
