#!/usr/bin/env python3
"""moto's server, with its Step Functions interpreter executing state machines and the AWS calls
the interpreter makes sent where the services are on this machine.

    python3 tests/moto_sfn_server.py --lambda-endpoint http://172.17.0.1:3001 -H 172.17.0.1 -p 5555

Everything but the flags below is passed to moto's own server (`moto.server.main`, what the
`moto_server` console script runs), so the server, its APIs and /moto-api/ are moto's, unchanged.

What this adds:

- `execute_state_machine` on: StartExecution runs the definition in moto's interpreter (the
  setting moto's `POST /moto-api/config {"stepfunctions": {...}}` changes; it survives
  /moto-api/reset).
- moto's interpreter gets every AWS client from `boto_client_for()`, which in server mode points
  at `http://localhost:<MOTO_PORT>` — not where this server listens when it is bound to another
  address. It is replaced (in its module and in every module that imported it by name) by one
  that sends service "lambda" to `--lambda-endpoint` (`sam local start-lambda`: the real
  functions through the real Invoke API) and every other service (the ItemReader's and the
  ResultWriter's S3, ...) to this server itself.
- A test hook, `LV_INVOKE_FAULTS` (or `--invoke-faults`): the path of a JSON file
  `{"match": "<substring>" or ["<substring>", ...], "times": N}`. The first N Lambda invokes whose
  payload contains the substring (all of them, for a list) are answered with what Lambda's
  service throttle answers — HTTP 429, `x-amzn-ErrorType: TooManyRequestsException`, parsed by
  botocore into its `TooManyRequestsException` ClientError — without invoking the function;
  moto's `arn:aws:states:::lambda:invoke` integration turns that into the ASL error
  `Lambda.TooManyRequestsException`, as Step Functions does. The file gets
  `"injected": <how many were>` and `"passed": <matching invokes sent on to the function>`
  written back. No file (or no variable): every invoke passes through unchanged.
- One fix of moto's interpreter, where moto 5.2.5 and Step Functions differ in a way the tests
  depend on: a Distributed Map whose failed items exceed its tolerated-failure threshold (by
  default: any failed item) fails with `States.ExceedToleratedFailureThreshold`, as in Step
  Functions, instead of succeeding with `null` results (see `enforce_tolerated_failures`).
"""

import argparse
import importlib
import json
import os
import pkgutil
import sys
import threading
import uuid

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.endpoint import convert_to_response_dict
from botocore.parsers import create_parser

LAMBDA_READ_TIMEOUT = 960  # the trainer's Timeout is 900 s; the Invoke call waits for it


class _Settings:
    lambda_endpoint: str = ""
    moto_endpoint: str = ""
    faults_path: str | None = None


_clients: dict = {}
_clients_lock = threading.Lock()
_faults_lock = threading.Lock()


def boto_client_for(region: str, service: str, state_credentials=None):
    """The replacement for moto.stepfunctions.parser.asl.utils.boto_client.boto_client_for:
    the same client settings as moto's (no SDK retries: Step Functions' Retry is the state
    machine's), another endpoint. Clients are cached (boto3 clients are thread-safe; creating
    them concurrently from the Map's worker threads is not)."""
    key = (service, region)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _make_client(region, service)
            _clients[key] = client
        return client


def _make_client(region: str, service: str):
    is_lambda = service == "lambda"
    client = boto3.session.Session().client(
        service_name=service,
        region_name=region,
        endpoint_url=_Settings.lambda_endpoint if is_lambda else _Settings.moto_endpoint,
        aws_access_key_id="ak",
        aws_secret_access_key="sk",
        config=Config(
            parameter_validation=False,
            retries={"max_attempts": 0, "total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=LAMBDA_READ_TIMEOUT if is_lambda else 120,
            s3={"addressing_style": "path"},
        ),
    )
    if is_lambda:
        client.meta.events.register("before-call.lambda.Invoke", _maybe_throttle)
    return client


def _maybe_throttle(model, params, **_):
    """before-call hook of the Lambda client's Invoke: None lets the call go to the function; a
    (response, parsed) pair is what botocore would have received, and it raises from it."""
    path = _Settings.faults_path
    if not path:
        return None
    body = params.get("body") or b""
    payload = body if isinstance(body, str) else bytes(body).decode("utf-8", "replace")
    with _faults_lock:
        try:
            with open(path) as file:
                faults = json.load(file)
        except FileNotFoundError:
            return None
        match = faults.get("match")
        needles = [match] if isinstance(match, str) else list(match or [])
        if not needles or not all(needle in payload for needle in needles):
            return None
        inject = faults.get("injected", 0) < int(faults.get("times", 0))
        counter = "injected" if inject else "passed"
        faults[counter] = faults.get(counter, 0) + 1
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w") as file:
            json.dump(faults, file)
        os.replace(temporary, path)
    if not inject:
        return None
    print(f"moto_sfn_server: throttled an invoke: {payload[:200]}", file=sys.stderr, flush=True)
    return _throttle_response(model)


class _Raw:
    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_):
        yield self._data


def _throttle_response(model):
    """Lambda's answer to a throttled Invoke, as botocore parses it."""
    headers = {
        "Content-Type": "application/json",
        "x-amzn-ErrorType": "TooManyRequestsException",
        "x-amzn-RequestId": str(uuid.uuid4()),
        "Retry-After": "1",
    }
    body = json.dumps(
        {"Reason": "CallerRateLimitExceeded", "Type": "User", "message": "Rate Exceeded."}
    ).encode()
    response = AWSResponse(_Settings.lambda_endpoint, 429, headers, _Raw(body))
    parser = create_parser(model.service_model.protocol)
    parsed = parser.parse(convert_to_response_dict(response, model), model.output_shape)
    return response, parsed


def _parser(module: str):
    """A module of moto's Step Functions interpreter (moto.stepfunctions.parser.<module>)."""
    return importlib.import_module("moto.stepfunctions.parser." + module)


def patch_moto() -> list[str]:
    """Replaces boto_client_for where moto's interpreter can call it from; returns the modules
    patched."""
    from moto.stepfunctions.parser.asl.utils import boto_client as source

    original = source.boto_client_for
    # First the definition, so every module imported from now on binds the replacement...
    source.boto_client_for = boto_client_for
    # ...then every module of the interpreter, so that none is imported later, lazily...
    import moto.stepfunctions.parser as parser

    prefix = parser.__name__ + "."
    for info in pkgutil.walk_packages(parser.__path__, prefix, onerror=lambda _: None):
        try:
            importlib.import_module(info.name)
        except ImportError:
            pass  # a module moto ported but cannot import (e.g. LocalStack's analytics): unused
    # ...and the ones that bound the original before.
    patched = [source.__name__]
    for name, module in list(sys.modules.items()):
        if vars(module).get("patch_moto") is patch_moto:
            continue  # this launcher
        if getattr(module, "boto_client_for", None) in (original, boto_client_for):
            module.boto_client_for = boto_client_for
            if name != source.__name__:
                patched.append(name)
    required = (
        prefix + "asl.component.state.exec.state_task.lambda_eval_utils",
        prefix + "asl.component.state.exec.state_map.item_reader.eval.resource_eval_s3",
    )
    missing = [name for name in required if name not in patched]
    if missing:
        raise SystemExit(f"moto_sfn_server: boto_client_for not found in {missing}: another moto?")
    return patched


TOLERATED_FAILURE_CAUSE = "The specified tolerated failure threshold was exceeded"


def enforce_tolerated_failures() -> None:
    """Makes a Distributed Map fail as Step Functions' does when its items fail.

    moto 5.2.5 parses ToleratedFailureCount/Percentage but never applies them: a Map Run whose
    child workflows fail for good still SUCCEEDS (failed items count as `failed` in DescribeMapRun
    and give `null` results) and the execution goes on. Step Functions fails the Map Run with
    `States.ExceedToleratedFailureThreshold` when failed or timed-out items exceed the threshold;
    with neither field set the tolerated percentage is 0, so one failed item fails it
    (docs.aws.amazon.com/step-functions/latest/dg/maprun-fail-threshold.html). AWS may finish
    running child workflows before the Map Run fails; here all of them finish first. The Map
    state then fails with that error, which its Catch/Retry see as Step Functions' would."""
    api = _parser("api")
    errors = "asl.component.common.error_name."
    failure_event = _parser(errors + "failure_event")
    states_error_name = _parser(errors + "states_error_name")
    error_types = _parser(errors + "states_error_name_type").StatesErrorNameType
    error = error_types.StatesExceedToleratedFailureThreshold
    state_map = "asl.component.state.exec.state_map."
    StateMap = _parser(state_map + "state_map").StateMap
    DistributedIterationComponent = _parser(
        state_map + "iteration.distributed_iteration_component"
    ).DistributedIterationComponent
    tolerated_failure = _parser(state_map + "tolerated_failure")
    EventDetails = _parser("asl.eval.event.event_detail").EventDetails

    parse_props = StateMap.from_state_props
    run_items = DistributedIterationComponent._map_run

    def from_state_props(self, state_props) -> None:
        parse_props(self, state_props)
        self.iteration_component.lv_declared_tolerance = (
            state_props.get(tolerated_failure.ToleratedFailureCountDecl) is not None,
            state_props.get(tolerated_failure.ToleratedFailurePercentageDecl) is not None,
        )

    def _map_run(self, env, eval_input) -> None:
        run_items(self, env, eval_input)
        items = eval_input.map_run_record.item_counter
        failed = items.failed.get() + items.timed_out.get()
        total = items.total.get()
        has_count, has_percentage = getattr(self, "lv_declared_tolerance", (False, False))
        count = eval_input.tolerated_failure_count
        percentage = eval_input.tolerated_failure_percentage
        if not has_count and not has_percentage:
            exceeded = failed > 0
        else:
            exceeded = (has_count and failed > count) or (
                has_percentage and total > 0 and 100.0 * failed / total > percentage
            )
        if not exceeded:
            return
        env.stack.pop()  # the items' results, which a failed Map does not return
        raise failure_event.FailureEventException(
            failure_event=failure_event.FailureEvent(
                env=env,
                error_name=states_error_name.StatesErrorName(typ=error),
                event_type=api.HistoryEventType.ExecutionFailed,
                event_details=EventDetails(
                    executionFailedEventDetails=api.ExecutionFailedEventDetails(
                        error=error.to_name(), cause=TOLERATED_FAILURE_CAUSE
                    )
                ),
            )
        )

    StateMap.from_state_props = from_state_props
    DistributedIterationComponent._map_run = _map_run


def enable_execution() -> None:
    from moto.core.config import default_user_config

    default_user_config["stepfunctions"] = {"execute_state_machine": True}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--lambda-endpoint", default=os.environ.get("LV_LAMBDA_ENDPOINT"))
    ours.add_argument("--invoke-faults", default=os.environ.get("LV_INVOKE_FAULTS"))
    args, moto_argv = ours.parse_known_args(argv)
    if not args.lambda_endpoint:
        raise SystemExit("moto_sfn_server: --lambda-endpoint (or LV_LAMBDA_ENDPOINT) is required")
    # Where moto will listen, by its own defaults.
    theirs = argparse.ArgumentParser(add_help=False)
    theirs.add_argument("-H", "--host", default="127.0.0.1")
    theirs.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", 5000)))
    where, _ = theirs.parse_known_args(moto_argv)
    host = "127.0.0.1" if where.host in ("0.0.0.0", "") else where.host
    _Settings.lambda_endpoint = args.lambda_endpoint.rstrip("/")
    _Settings.moto_endpoint = f"http://{host}:{where.port}"
    _Settings.faults_path = args.invoke_faults or None

    patched = patch_moto()
    enforce_tolerated_failures()
    enable_execution()
    print(
        f"moto_sfn_server: lambda -> {_Settings.lambda_endpoint}, other services -> "
        f"{_Settings.moto_endpoint}; faults file {_Settings.faults_path}; "
        f"boto_client_for replaced in {len(patched)} modules; Distributed Maps apply their "
        "tolerated-failure threshold",
        file=sys.stderr,
        flush=True,
    )
    from moto.server import main as moto_main

    # moto's main reads sys.argv when given an empty list, which holds our flags too.
    moto_main(moto_argv or ["-H", where.host, "-p", str(where.port)])


if __name__ == "__main__":
    main()
