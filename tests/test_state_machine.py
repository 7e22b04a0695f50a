"""The training state machine as deployed: statemachine/training.asl.json with the
DefinitionSubstitutions CloudFormation makes from template.yaml, executed by moto's Step
Functions interpreter (tests/moto_sfn_server.py), each Lambda task invoking the real trainer
through `sam local start-lambda`. The trainer shards at MAP_SHARD_IMAGES images
(events/local-env.json), so the small test dataset makes a Distributed Map of several shards.

Faults are injected by the launcher (its `LV_INVOKE_FAULTS` file, the `invoke_faults` fixture):
an invoke whose payload matches is answered as Lambda's service throttle answers
(TooManyRequestsException, `Lambda.TooManyRequestsException` to the state machine) without
reaching the function. See conftest.py for the rest of the machinery."""

import csv
import email
import email.policy
import io
import json
import re
import shlex
import time
import tomllib
from urllib.parse import unquote_plus

import pytest
import yaml

from conftest import FIXTURES, INPUT, MOTO_URL, REPO, RESULTS, Stack, client

DEFINITION = REPO / "statemachine" / "training.asl.json"
TEMPLATE = REPO / "template.yaml"
SAMCONFIG = REPO / "samconfig.toml"
LOCAL_ENV = REPO / "events" / "local-env.json"
# What `sam local` calls the stack (samconfig.toml: TRAINER_FUNCTION resolves to local-trainer).
STACK_NAME = "local"
TRAINER = "TrainerFunction"
THROTTLE = "Lambda.TooManyRequestsException"
# Every Lambda task is a `sam local start-lambda` invoke, which starts a trainer container of its
# own (Docker, the runtime emulator, the model loaded from scratch): prepare, one per shard (at
# once), train, and retries with their backoff. Minutes on a 2-core machine, so the wait is long;
# nothing here depends on how long it takes.
EXECUTION_SECONDS = 600

# The two-label dataset the other suites train on, and the broken JPEG they add
# (crates/vision/tests/support/fixtures.rs): 9 images, so 3 shards of 4.
DATASET = [
    tuple(line.strip().split("/", 1))
    for line in (FIXTURES / "two-labels.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
BROKEN_JPEG = b"\xff\xd8\xff\xe0 not really"
DATASET_IMAGES = len(DATASET) + 1
SHARD_IMAGES = 4  # events/local-env.json's MAP_SHARD_IMAGES
SHARDS = -(-DATASET_IMAGES // SHARD_IMAGES)


# ---------------------------------------------------------------- the template, as CloudFormation reads it


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (`!Ref x` → `{"Ref": "x"}`, `!GetAtt a.b` →
    `{"Fn::GetAtt": ["a", "b"]}`, …)."""


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_TemplateLoader)


def parameter_values(document: dict) -> dict:
    """The template's parameters as `sam local start-lambda --config-env local` sets them: the
    samconfig.toml overrides, else the defaults."""
    values = {
        name: str(spec["Default"])
        for name, spec in document.get("Parameters", {}).items()
        if "Default" in spec
    }
    local = tomllib.loads(SAMCONFIG.read_text())["local"]["local_start_lambda"]["parameters"]
    for pair in shlex.split(local.get("parameter_overrides", "")):
        name, _, value = pair.partition("=")
        values[name] = value
    return values


def state_machine_resource(document: dict) -> tuple[str, dict]:
    found = [
        (logical_id, resource)
        for logical_id, resource in document["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::StateMachine"
        and resource.get("Properties", {}).get("DefinitionUri") == "statemachine/training.asl.json"
    ]
    assert len(found) == 1, f"template.yaml: {len(found)} state machines use {DEFINITION.name}"
    return found[0]


def substitution_value(name: str, value, document: dict, parameters: dict) -> str:
    """What CloudFormation puts in place of `${name}`, with the functions where `sam local
    start-lambda` serves them: a function's ARN (or name) is its logical id, which start-lambda
    accepts as FunctionName."""
    resources = document["Resources"]

    def is_function(logical_id) -> bool:
        resource = resources.get(logical_id, {})
        return resource.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function")

    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dict) and len(value) == 1:
        [(function, argument)] = value.items()
        if function == "Fn::GetAtt" and argument[1] == "Arn" and is_function(argument[0]):
            return argument[0]
        if function == "Ref" and is_function(argument):
            return argument
        if function == "Ref" and argument in parameters:
            return parameters[argument]
    pytest.fail(
        f"template.yaml DefinitionSubstitutions {name}: {value!r} is not something this test "
        "knows how to resolve under `sam local` (a function's Arn/Ref, a parameter, a literal): "
        "teach substitution_value() in tests/test_state_machine.py"
    )


def definition_as_deployed() -> tuple[str, str]:
    """The state machine's name and its definition with the DefinitionSubstitutions made."""
    document = template()
    logical_id, resource = state_machine_resource(document)
    properties = resource["Properties"]
    parameters = parameter_values(document)
    substitutions = {
        name: substitution_value(name, value, document, parameters)
        for name, value in (properties.get("DefinitionSubstitutions") or {}).items()
    }
    text = DEFINITION.read_text()
    used = set(re.findall(r"\$\{([^}]*)\}", text))
    unknown = used - set(substitutions)
    assert not unknown, (
        f"{DEFINITION.name} uses {sorted(unknown)}, which {logical_id}'s DefinitionSubstitutions "
        "in template.yaml does not define"
    )
    for name, value in substitutions.items():
        text = text.replace("${" + name + "}", value)
    name = properties.get("Name", f"{STACK_NAME}-training")
    if isinstance(name, dict) and isinstance(name.get("Fn::Sub"), str):
        name = name["Fn::Sub"].replace("${AWS::StackName}", STACK_NAME)
    assert isinstance(name, str) and "${" not in name, f"{logical_id} Name: {name!r}"
    return name, text


def extract_throttle_attempts(definition: dict) -> int:
    """How often the Map's task invokes one shard that Lambda keeps throttling: once, and once
    per retry of the first Retry entry that matches Lambda.TooManyRequestsException."""
    maps = [
        state
        for state in definition["States"].values()
        if state.get("Type") == "Map"
        and state.get("ItemProcessor", {}).get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED"
    ]
    assert len(maps) == 1, "one Distributed Map"
    tasks = [s for s in maps[0]["ItemProcessor"]["States"].values() if s.get("Type") == "Task"]
    assert len(tasks) == 1, "one task per shard"
    for retrier in tasks[0].get("Retry", []):
        names = retrier["ErrorEquals"]
        if THROTTLE in names or "States.ALL" in names:
            return 1 + retrier.get("MaxAttempts", 3)
    return 1


def test_the_local_stack_shards_small_datasets():
    """What the other tests rely on: `sam local` gives the trainer MAP_SHARD_IMAGES and
    MAP_THRESHOLD_IMAGES from events/local-env.json — which it does only for variables the
    template declares for the function."""
    local = json.loads(LOCAL_ENV.read_text())["Parameters"]
    assert int(local["MAP_SHARD_IMAGES"]) == SHARD_IMAGES
    assert SHARDS >= 3, "a Map of several shards"
    assert int(local["MAP_THRESHOLD_IMAGES"]) >= DATASET_IMAGES
    declared = template()["Resources"][TRAINER]["Properties"]["Environment"]["Variables"]
    for name in ("MAP_SHARD_IMAGES", "MAP_THRESHOLD_IMAGES"):
        assert name in declared, (
            f"template.yaml: {TRAINER} does not declare {name}, so `sam local` drops "
            "events/local-env.json's value"
        )


def test_the_definition_substitutions_are_all_made():
    name, text = definition_as_deployed()
    definition = json.loads(text)
    assert name == f"{STACK_NAME}-training"
    assert "${" not in text
    assert TRAINER in text
    assert extract_throttle_attempts(definition) > 1, "the shard task retries a throttle"


# ---------------------------------------------------------------- executions


@pytest.fixture
def stack(start_lambda):
    return Stack()


@pytest.fixture
def sfn(stack):
    return client("stepfunctions", MOTO_URL)


@pytest.fixture
def training(stack, sfn) -> str:
    """The state machine, created in moto (reset with the stack) as CloudFormation creates it."""
    name, text = definition_as_deployed()
    return sfn.create_state_machine(
        name=name,
        definition=text,
        roleArn=f"arn:aws:iam::123456789012:role/{name}-role",
        type="STANDARD",
    )["stateMachineArn"]


class Faults:
    """The launcher's fault file: the first `times` invokes whose payload contains every string
    of `match` are throttled; it counts them (`injected`) and the matching invokes it let
    through (`passed`)."""

    def __init__(self, path):
        self.path = path

    def inject(self, match: list[str], times: int) -> None:
        self.path.write_text(json.dumps({"match": match, "times": times}))

    def counts(self) -> tuple[int, int]:
        recorded = json.loads(self.path.read_text())
        return recorded.get("injected", 0), recorded.get("passed", 0)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture
def faults(invoke_faults):
    injected = Faults(invoke_faults)
    injected.clear()
    yield injected
    injected.clear()


def spec(dataset: str, notify: str) -> bytes:
    return json.dumps(
        {
            "dataset": dataset,
            "min_images_per_class": 2,
            "validation_split": 0.25,
            "seed": 3,
            "notify": [notify],
        }
    ).encode()


def submit(stack: Stack, job_id: str, dataset: str, notify: str = "team@example.com") -> None:
    """The dataset and the job spec in the input bucket. The trainer reads the spec from
    jobs/<id>.json when no claim (checkpoints/<id>/spec.json) was written, as when it is invoked
    directly; the upload trigger's notifications for the spec are not relayed."""
    for label, name in DATASET:
        stack.put(INPUT, f"datasets/{dataset}/{label}/{name}", (FIXTURES / name).read_bytes())
    stack.put(INPUT, f"datasets/{dataset}/coffee/broken.jpg", BROKEN_JPEG)
    stack.put(INPUT, f"jobs/{job_id}.json", spec(dataset, notify))
    stack.notifications("input-events")


def shard_key(job_id: str, index: int) -> str:
    return f"checkpoints/{job_id}/shards/{index:05d}.json"


def explain(sfn, execution_arn: str) -> str:
    """For an assertion message: how the execution ended and its last events."""
    described = sfn.describe_execution(executionArn=execution_arn)
    events = sfn.get_execution_history(executionArn=execution_arn)["events"]
    lines = [f"{described['status']}: {described.get('error')} {described.get('cause')}"]
    for event in events[-15:]:
        details = {k: v for k, v in event.items() if k.endswith("EventDetails")}
        lines.append(f"  {event['type']} {json.dumps(details)[:400]}")
    return "\n".join(lines)


def execute(sfn, state_machine_arn: str, job_id: str) -> dict:
    """Starts the job's execution (named after the job, with the input the trainer gives it)
    and waits until it is no longer running."""
    execution_arn = sfn.start_execution(
        stateMachineArn=state_machine_arn, name=job_id, input=json.dumps({"job_id": job_id})
    )["executionArn"]
    deadline = time.monotonic() + EXECUTION_SECONDS
    while (described := sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, (
            f"still running after {EXECUTION_SECONDS} s\n{explain(sfn, execution_arn)}"
        )
        time.sleep(2)
    return described


def prepared(sfn, execution_arn: str) -> dict:
    """What the prepare step returned: the Lambda task's response in the execution's history."""
    outputs = []
    for event in sfn.get_execution_history(executionArn=execution_arn)["events"]:
        if event["type"] == "TaskSucceeded":
            payload = json.loads(event["taskSucceededEventDetails"]["output"]).get("Payload")
            if isinstance(payload, dict) and "manifest" in payload:
                outputs.append(payload)
    assert len(outputs) == 1, f"prepare ran {len(outputs)} times\n{explain(sfn, execution_arn)}"
    return outputs[0]


def map_run(sfn, execution_arn: str) -> dict:
    runs = sfn.list_map_runs(executionArn=execution_arn)["mapRuns"]
    assert len(runs) == 1, runs
    return sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"])


def cache_packs(stack: Stack, dataset: str) -> list[str]:
    """The packed feature objects of one dataset (cache/<backbone>/<size>/<dataset>/packs/)."""
    keys = []
    for page in stack.s3.get_paginator("list_objects_v2").paginate(Bucket=RESULTS, Prefix="cache/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return [k for k in keys if f"/{dataset}/packs/" in k and k.endswith(".lvp")]


def test_training_through_the_map_equals_the_in_lambda_path(stack, sfn, training):
    # The same images under two dataset names, so the two jobs share no cached features.
    submit(stack, "direct-2026-12-05", "flowers-direct")
    submit(stack, "mapped-2026-12-05", "flowers-mapped")

    # The in-Lambda path: the trainer invoked as the upload trigger invokes it.
    response = stack.invoke(TRAINER, {"job_id": "direct-2026-12-05", "continuation": 0})
    assert isinstance(response, dict) and "errorType" not in response, response
    direct = stack.get_json(RESULTS, "results/direct-2026-12-05.json")
    assert direct["status"] == "succeeded", direct

    # The same job through the state machine.
    execution = execute(sfn, training, "mapped-2026-12-05")
    arn = execution["executionArn"]
    assert execution["status"] == "SUCCEEDED", explain(sfn, arn)
    prepare = prepared(sfn, arn)
    assert prepare["status"] == "ready", prepare
    assert (prepare["images"], prepare["cached"]) == (DATASET_IMAGES, 0), prepare
    assert prepare["shards"] == SHARDS, prepare
    manifest = stack.s3.get_object(
        Bucket=prepare["manifest"]["bucket"], Key=prepare["manifest"]["key"]
    )["Body"].read()
    rows = list(csv.DictReader(io.StringIO(manifest.decode())))
    assert [row["shard"] for row in rows] == [
        shard_key("mapped-2026-12-05", n) for n in range(prepare["shards"])
    ], manifest
    run = map_run(sfn, arn)
    assert run["status"] == "SUCCEEDED", run
    counts = run["itemCounts"]
    assert (counts["total"], counts["succeeded"], counts["failed"]) == (SHARDS, SHARDS, 0), run

    mapped = stack.get_json(RESULTS, "results/mapped-2026-12-05.json")
    assert mapped["status"] == "succeeded", mapped
    a, b = direct["summary"], mapped["summary"]
    assert sorted(a["labels"]) == sorted(b["labels"]) == ["cat", "coffee"]
    assert (a["images_train"], a["images_validation"], a["images_skipped"]) == (
        b["images_train"],
        b["images_validation"],
        b["images_skipped"],
    )
    assert a["images_skipped"] == 1, "the broken JPEG is skipped on both paths"
    assert a["images_train"] + a["images_validation"] + a["images_skipped"] == DATASET_IMAGES
    assert a["validation_accuracy"] == b["validation_accuracy"]
    assert a["macro_f1"] == b["macro_f1"]
    # One packed object per shard, written by the Map's children.
    assert len(cache_packs(stack, "flowers-mapped")) == prepare["shards"], cache_packs(
        stack, "flowers-mapped"
    )
    assert stack.exists(RESULTS, "models/mapped-2026-12-05/head.json")

    # A new job on the same, now cached, dataset: no shards, so no Map; the same model.
    submit(stack, "again-2026-12-05", "flowers-mapped")
    again = execute(sfn, training, "again-2026-12-05")
    assert again["status"] == "SUCCEEDED", explain(sfn, again["executionArn"])
    rerun = prepared(sfn, again["executionArn"])
    assert (rerun["cached"], rerun["shards"]) == (DATASET_IMAGES, 0), rerun
    assert sfn.list_map_runs(executionArn=again["executionArn"])["mapRuns"] == []
    repeated = stack.get_json(RESULTS, "results/again-2026-12-05.json")
    assert repeated["status"] == "succeeded", repeated
    assert repeated["summary"]["macro_f1"] == b["macro_f1"]


def test_a_throttled_shard_is_retried(stack, sfn, training, faults):
    job_id = "throttled-2026-12-05"
    submit(stack, job_id, "flowers-throttled")
    faults.inject(['"extract"', f'"{shard_key(job_id, 1)}"'], times=1)

    execution = execute(sfn, training, job_id)
    assert execution["status"] == "SUCCEEDED", explain(sfn, execution["executionArn"])
    # Throttled once, then retried: the second invoke of that shard reached the trainer.
    assert faults.counts() == (1, 1)
    run = map_run(sfn, execution["executionArn"])
    assert prepared(sfn, execution["executionArn"])["shards"] == SHARDS
    assert (run["itemCounts"]["succeeded"], run["itemCounts"]["failed"]) == (SHARDS, 0), run
    result = stack.get_json(RESULTS, f"results/{job_id}.json")
    assert result["status"] == "succeeded", result
    assert len(cache_packs(stack, "flowers-throttled")) == SHARDS


def test_a_shard_that_fails_for_good_fails_the_job_once_with_one_email(stack, sfn, training, faults):
    job_id = "failing-2026-12-05"
    owner = "owner-of-failing@example.com"
    submit(stack, job_id, "flowers-failing", notify=owner)
    faults.inject(['"extract"', f'"{shard_key(job_id, 1)}"'], times=99)

    execution = execute(sfn, training, job_id)
    assert execution["status"] == "FAILED", explain(sfn, execution["executionArn"])
    # Every attempt the shard's Retry allows was throttled; none reached the trainer.
    attempts = extract_throttle_attempts(json.loads(definition_as_deployed()[1]))
    assert faults.counts() == (attempts, 0)
    run = map_run(sfn, execution["executionArn"])
    assert prepared(sfn, execution["executionArn"])["shards"] == SHARDS
    assert run["status"] == "FAILED", run
    assert (run["itemCounts"]["succeeded"], run["itemCounts"]["failed"]) == (SHARDS - 1, 1), run

    # The Catch recorded a failed result naming what stopped the job; no model. A Distributed
    # Map that fails tells its Catch only States.ExceedToleratedFailureThreshold (the shard's own
    # error stays in its child execution). moto 5.2.5 does not apply the tolerated-failure
    # threshold; tests/moto_sfn_server.py makes it, as Step Functions does.
    result = stack.get_json(RESULTS, f"results/{job_id}.json")
    assert result["status"] == "failed", result
    assert result["notify"] == [owner], result
    assert result["error"]["kind"] == "step_failed", result
    assert "States.ExceedToleratedFailureThreshold" in result["error"]["message"], result
    assert not stack.exists(RESULTS, f"models/{job_id}/head.json")

    # Written once, so announced once; relayed twice (S3 delivers at least once): one email.
    deadline = time.monotonic() + 30
    while not (events := stack.notifications("results-events")):
        assert time.monotonic() < deadline, "moto announced no result"
        time.sleep(0.5)
    assert len(events) == 1, events
    assert unquote_plus(events[0]["Records"][0]["s3"]["object"]["key"]) == f"results/{job_id}.json"
    for attempt in range(2):
        response = stack.invoke("NotifierFunction", events[0])
        assert isinstance(response, dict) and "errorType" not in response, response
        emails = stack.sent_emails()
        assert len(emails) == 1, f"attempt {attempt + 1}: {emails}"
    assert owner in json.dumps(emails[0])
    assert stack.get_json(RESULTS, f"notifications/{job_id}.json")["state"] == "sent"
    assert stack.notifications("results-events") == [], "the result was written once"


def test_a_prefix_is_reclassified_through_the_map(stack, sfn, training):
    """A job spec with `classify`: every image under the prefix, and nothing else, gets a
    prediction from the serving model (the ImageNet classes here: no model was trained),
    through the same definition's Map; the result counts them per label and points at one CSV
    of every image; the owner gets one email."""
    job_id = "reclassify-2026-12-05"
    owner = "owner-of-reclassify@example.com"
    images = {f"images/2025/{label}/{name}": (FIXTURES / name).read_bytes() for label, name in DATASET}
    images["images/2025/coffee/broken.jpg"] = BROKEN_JPEG
    for key, body in images.items():
        stack.put(INPUT, key, body)
    stack.put(INPUT, "images/2024/outside.jpg", images[next(iter(images))])
    spec = {"classify": {"prefix": "images/2025/"}, "notify": [owner]}
    stack.put(INPUT, f"jobs/{job_id}.json", json.dumps(spec).encode())
    stack.notifications("input-events")

    execution = execute(sfn, training, job_id)
    arn = execution["executionArn"]
    assert execution["status"] == "SUCCEEDED", explain(sfn, arn)
    prepare = prepared(sfn, arn)
    assert (prepare["images"], prepare["shards"]) == (DATASET_IMAGES, SHARDS), prepare
    run = map_run(sfn, arn)
    assert (run["itemCounts"]["succeeded"], run["itemCounts"]["failed"]) == (SHARDS, 0), run

    result = stack.get_json(RESULTS, f"results/{job_id}.json")
    assert result["status"] == "succeeded", result
    found = result["classification"]
    assert result["prefix"] == "images/2025/" and found["model_id"] == "imagenet", result
    assert (found["images"], found["predicted"]) == (DATASET_IMAGES, DATASET_IMAGES - 1), found
    assert [error["images"] for error in found["errors"]] == [1], "the broken JPEG: " + str(found)
    assert sum(count["images"] for count in found["labels"]) == found["predicted"], found

    body = stack.s3.get_object(Bucket=RESULTS, Key=found["predictions_csv"])["Body"].read()
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert sorted(row["key"] for row in rows) == sorted(images), rows
    for row in rows:
        prediction = stack.get_json(RESULTS, "predictions/" + row["key"][len("images/") :] + ".json")
        assert prediction["model_id"] == row["model_id"] == "imagenet", (row, prediction)
        if row["error"]:
            assert prediction["error"]["kind"] == row["error"], (row, prediction)
        else:
            assert prediction["top"][0]["label"] == row["label"], (row, prediction)
    assert not stack.exists(RESULTS, "predictions/2024/outside.jpg.json"), "only the prefix"

    # One email, even when the result's event is relayed twice.
    deadline = time.monotonic() + 30
    while not (events := stack.notifications("results-events")):
        assert time.monotonic() < deadline, "moto announced no result"
        time.sleep(0.5)
    assert len(events) == 1, events
    for _ in range(2):
        response = stack.invoke("NotifierFunction", events[0])
        assert isinstance(response, dict) and "errorType" not in response, response
    emails = stack.sent_emails()
    assert len(emails) == 1, emails
    assert owner in json.dumps(emails[0])
    raw = next(value for value in emails[0].values() if isinstance(value, str) and "Subject:" in value)
    subject = email.message_from_string(raw, policy=email.policy.default)["Subject"]
    assert subject.endswith(f"succeeded: {found['predicted']} of {found['images']} images classified"), subject
