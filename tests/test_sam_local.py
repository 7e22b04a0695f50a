"""The SAM application as deployed: every sample event through `sam local invoke`, the whole
chain from real S3 notifications through `sam local start-lambda`, and what Lambda reports when
an invocation fails. See conftest.py for the machinery."""

import json
import time
from urllib.parse import unquote_plus

import pytest

from conftest import (
    FIXTURES,
    INPUT,
    REPO,
    RESULTS,
    Stack,
    sam_local_invoke,
)

JOB_ID = "flowers-2026-11-29"
# The small two-label dataset the Rust tests train on too (odd formats included).
DATASET = [
    tuple(line.split("/", 1))
    for line in (FIXTURES / "two-labels.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
SPEC = {
    "dataset": "flowers",
    "min_images_per_class": 2,
    "validation_split": 0.25,
    "seed": 3,
    "notify": ["team@example.com"],
}


def fixture_of_size(size: int) -> bytes:
    """The test photo a sample event describes (events/README.md: real sizes and ETags)."""
    for path in sorted(FIXTURES.iterdir()):
        if path.stat().st_size == size:
            return path.read_bytes()
    raise AssertionError(f"no fixture of {size} bytes")


def sample_event(name: str) -> dict:
    return json.loads((REPO / "events" / name).read_text())


def upload_what_the_event_announces(stack: Stack, event: dict) -> list[str]:
    """Puts every object a sample event names, so the function finds what S3 promised it."""
    keys = []
    for record in event["Records"]:
        key = unquote_plus(record["s3"]["object"]["key"])
        if key.startswith("images/"):
            stack.put(INPUT, key, fixture_of_size(record["s3"]["object"]["size"]))
        elif key.startswith("jobs/"):
            upload_dataset(stack)
            stack.put(INPUT, key, json.dumps(SPEC).encode())
        keys.append(key)
    stack.notifications("input-events")  # what moto queued for the puts: not under test here
    return keys


def upload_dataset(stack: Stack) -> None:
    for label, name in DATASET:
        stack.put(INPUT, f"datasets/flowers/{label}/{name}", (FIXTURES / name).read_bytes())


def assert_succeeded(response: dict) -> None:
    assert isinstance(response, dict) and "errorType" not in response, response


def assert_prediction(stack: Stack, image_key: str, expected_labels: tuple[str, ...]) -> None:
    document = stack.get_json(RESULTS, "predictions/" + image_key.removeprefix("images/") + ".json")
    assert document["source_key"] == image_key
    assert document["model_id"] == "imagenet"
    assert document.get("error") is None, document
    # ImageNet labels list synonyms ("bobsled, bobsleigh, bob"): compare the first name.
    top = document["top"][0]["label"].split(",")[0]
    assert top in expected_labels, document["top"]


def wait_for_result(stack: Stack) -> dict:
    result = stack.wait_for(RESULTS, f"results/{JOB_ID}.json")
    assert result["status"] == "succeeded", result
    return result


@pytest.fixture
def stack(start_lambda):
    return Stack()


def test_image_upload_event_writes_a_prediction(stack):
    upload_what_the_event_announces(stack, sample_event("image-upload.json"))
    response = sam_local_invoke("UploadTriggerFunction", "events/image-upload.json")
    assert_succeeded(response)
    assert response == {"records": 1}
    assert_prediction(stack, "images/cats/chelsea.jpg", ("Egyptian cat", "tabby", "tiger cat"))


def test_url_encoded_key_event_writes_the_decoded_keys_prediction(stack):
    keys = upload_what_the_event_announces(stack, sample_event("key-with-spaces-unicode.json"))
    assert keys == ["images/summer holiday/café à Paris.jpg"]
    response = sam_local_invoke("UploadTriggerFunction", "events/key-with-spaces-unicode.json")
    assert_succeeded(response)
    assert_prediction(stack, keys[0], ("espresso", "cup", "coffee mug"))


def test_job_spec_event_claims_the_job_and_starts_the_trainer(stack):
    upload_what_the_event_announces(stack, sample_event("job-spec.json"))
    response = sam_local_invoke("UploadTriggerFunction", "events/job-spec.json")
    assert_succeeded(response)
    claim = stack.get_json(RESULTS, f"checkpoints/{JOB_ID}/spec.json")
    assert claim["dataset"] == "flowers"
    # The trainer was started through start-lambda's Invoke API, in a container of its own.
    result = wait_for_result(stack)
    assert result["dataset"] == "flowers"
    model = result["model"]
    assert model["files"], result
    for name in model["files"]:
        assert stack.exists(RESULTS, model["prefix"].rstrip("/") + "/" + name), (name, result)


def test_multi_record_event_handles_every_record(stack):
    keys = upload_what_the_event_announces(stack, sample_event("multi-record.json"))
    response = sam_local_invoke("UploadTriggerFunction", "events/multi-record.json")
    assert_succeeded(response)
    assert response == {"records": 3}
    assert_prediction(stack, keys[0], ("bobsled",))
    assert_prediction(stack, keys[1], ("espresso", "cup", "coffee mug"))
    assert stack.exists(RESULTS, f"checkpoints/{JOB_ID}/spec.json")
    wait_for_result(stack)


def test_result_event_emails_the_report_once(stack):
    upload_what_the_event_announces(stack, sample_event("job-spec.json"))
    assert_succeeded(sam_local_invoke("UploadTriggerFunction", "events/job-spec.json"))
    wait_for_result(stack)
    stack.notifications("results-events")
    for attempt in range(2):
        response = sam_local_invoke("NotifierFunction", "events/result-created.json")
        assert_succeeded(response)
        emails = stack.sent_emails()
        assert len(emails) == 1, f"attempt {attempt + 1}: {emails}"
    assert stack.exists(RESULTS, f"notifications/{JOB_ID}.json")
    assert "team@example.com" in json.dumps(emails[0])


def test_a_trainer_lambda_gave_up_on_gets_a_failed_result_once(stack):
    # What Lambda sends the on-failure destination after the trainer's last retry.
    stack.put(INPUT, f"jobs/{JOB_ID}.json", json.dumps(SPEC).encode())
    for attempt in range(2):
        response = sam_local_invoke("FailureRecorderFunction", "events/trainer-gave-up.json")
        assert_succeeded(response)
        assert response == {"records": 1}
        result = stack.get_json(RESULTS, f"results/{JOB_ID}.json")
        assert result["status"] == "failed", result
        assert result["error"]["kind"] == "retries_exhausted", result
        assert "SlowDown" in result["error"]["message"], result
        assert result["notify"] == SPEC["notify"], result
        # Written once: the second delivery of the same record finds it (one email).
        assert len(stack.notifications("results-events")) == (1 if attempt == 0 else 0)


def test_every_sample_event_is_covered():
    covered = {
        "image-upload.json",
        "key-with-spaces-unicode.json",
        "job-spec.json",
        "multi-record.json",
        "result-created.json",
        "trainer-gave-up.json",
    }
    events = {p.name for p in (REPO / "events").glob("*.json")} - {"local-env.json"}
    assert events == covered


def test_the_whole_chain_from_real_notifications(stack):
    # An image: moto's notification → relay → upload trigger → prediction.
    stack.put(INPUT, "images/pets/chelsea.jpg", (FIXTURES / "chelsea.jpg").read_bytes())
    events = stack.notifications("input-events")
    assert len(events) == 1
    assert_succeeded(stack.invoke("UploadTriggerFunction", events[0]))
    assert_prediction(stack, "images/pets/chelsea.jpg", ("Egyptian cat", "tabby", "tiger cat"))

    # A dataset and a job spec: only the spec is announced (datasets/ has no notification).
    upload_dataset(stack)
    stack.put(INPUT, f"jobs/{JOB_ID}.json", json.dumps(SPEC).encode())
    events = stack.notifications("input-events")
    assert len(events) == 1
    assert_succeeded(stack.invoke("UploadTriggerFunction", events[0]))
    # The trainer runs through the Invoke API and writes the result, which S3 announces.
    result = wait_for_result(stack)
    summary = result["summary"]
    assert sorted(summary["labels"]) == ["cat", "coffee"]
    assert summary["images_train"] + summary["images_validation"] == len(DATASET)
    deadline = time.monotonic() + 30
    while not (result_events := stack.notifications("results-events")):
        assert time.monotonic() < deadline, "moto announced no result"
        time.sleep(0.5)
    assert len(result_events) == 1
    assert_succeeded(stack.invoke("NotifierFunction", result_events[0]))
    assert len(stack.sent_emails()) == 1
    # The same result event again (S3 delivers at least once): still one email.
    assert_succeeded(stack.invoke("NotifierFunction", result_events[0]))
    assert len(stack.sent_emails()) == 1


def test_a_failing_invocation_reports_a_stable_kind_and_one_line(start_lambda):
    # A stack whose results bucket is missing: reading the current model fails.
    stack = Stack(with_results_bucket=False)
    upload_what_the_event_announces(stack, sample_event("image-upload.json"))
    response = sam_local_invoke("UploadTriggerFunction", "events/image-upload.json")
    assert response.get("errorType") == "S3", response
    message = response["errorMessage"]
    assert "\n" not in message
    assert "NoSuchBucket" in message, message
    assert "lambda-vision-results-123456789012-us-east-1" in message
    # No SDK debug dump or raw HTTP response.
    for noise in ("HttpResponse", "<?xml", "ServiceError", "raw:"):
        assert noise not in message, message
