#!/usr/bin/env python3
"""Checks a Step Functions definition (Amazon States Language, JSON) for what the other validators miss.

asl-validator and cfn-lint accept any key inside Retry and Catch entries, ItemReader, ReaderConfig,
ItemBatcher and ProcessorConfig, so a misspelt `MaxAttempt` or `CSVHeaderLocaton` deploys and is
silently ignored (retries stop after the default 3, the CSV header is read as an item). This check:

  - allows, per state Type, only the keys the ASL specification defines (JSONPath and JSONata);
  - allows only the specified keys in Retry and Catch entries, ItemReader, ReaderConfig,
    ItemBatcher, ProcessorConfig, ResultWriter, and in every (sub-)state machine's top level;
  - checks the values of the enumerated fields among those (Mode, ExecutionType, InputType,
    CSVHeaderLocation, JitterStrategy);
  - checks that every StartAt, Next, Default, Choices[].Next and Catch[].Next names a state of its
    own scope (a Map's ItemProcessor and a Parallel branch are scopes of their own);
  - refuses what the tests' Step Functions interpreter (moto 5.2.5) cannot execute: ItemBatcher,
    EXPRESS child executions, an ItemReader InputType other than CSV or JSON, and an integer
    ToleratedFailurePercentage (--no-moto to allow them);
  - with --template, checks that the ${Name} placeholders of the definition and the
    DefinitionSubstitutions of the template resource whose DefinitionUri is this file are the same
    set (a placeholder the template does not substitute deploys as literal text).

Usage: check-asl-keys.py [--no-moto] [--template template.yaml] DEFINITION.json
       check-asl-keys.py --selftest DEFINITION.json   (mutates the definition; each mutation must be caught)
Exit status 0 when clean, 1 with one line per problem on stderr, 2 on unusable input.
Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys

# ------------------------------------------------------------------ allow-lists (ASL specification)

_COMMON = {"Type", "Comment", "QueryLanguage"}
_FLOW = {"Next", "End"}
_IO = {"InputPath", "OutputPath"}
_JSONATA = {"Output", "Assign"}

STATE_KEYS: dict[str, set[str]] = {
    "Pass": _COMMON | _FLOW | _IO | _JSONATA | {"ResultPath", "Parameters", "Result"},
    "Task": _COMMON | _FLOW | _IO | _JSONATA | {
        "Resource", "Parameters", "Arguments", "ResultPath", "ResultSelector", "Retry", "Catch",
        "TimeoutSeconds", "TimeoutSecondsPath", "HeartbeatSeconds", "HeartbeatSecondsPath",
        "Credentials",
    },
    "Choice": _COMMON | _IO | _JSONATA | {"Choices", "Default"},
    "Wait": _COMMON | _FLOW | _IO | _JSONATA | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath"},
    "Succeed": _COMMON | _IO | {"Output"},
    "Fail": _COMMON | {"Error", "ErrorPath", "Cause", "CausePath"},
    "Parallel": _COMMON | _FLOW | _IO | _JSONATA | {
        "Branches", "Parameters", "Arguments", "ResultPath", "ResultSelector", "Retry", "Catch",
    },
    "Map": _COMMON | _FLOW | _IO | _JSONATA | {
        "ItemProcessor", "Iterator", "ItemsPath", "Items", "ItemSelector", "Parameters",
        "ItemReader", "ItemBatcher", "ResultWriter", "ResultPath", "ResultSelector", "Retry",
        "Catch", "MaxConcurrency", "MaxConcurrencyPath", "ToleratedFailurePercentage",
        "ToleratedFailurePercentagePath", "ToleratedFailureCount", "ToleratedFailureCountPath",
        "Label",
    },
}
# States that must have exactly one of Next and End.
NEEDS_NEXT_OR_END = {"Pass", "Task", "Wait", "Parallel", "Map"}

MACHINE_KEYS = {"Comment", "StartAt", "States", "Version", "TimeoutSeconds", "QueryLanguage"}
ITEM_PROCESSOR_KEYS = {"Comment", "ProcessorConfig", "StartAt", "States"}
ITERATOR_KEYS = {"Comment", "StartAt", "States"}
BRANCH_KEYS = {"Comment", "StartAt", "States"}

RETRY_KEYS = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds",
              "JitterStrategy", "Comment"}
CATCH_KEYS = {"ErrorEquals", "Next", "ResultPath", "Comment", "Output", "Assign"}
ITEM_READER_KEYS = {"Resource", "ReaderConfig", "Parameters", "Arguments"}
READER_CONFIG_KEYS = {"InputType", "CSVHeaderLocation", "CSVHeaders", "CSVDelimiter", "MaxItems",
                      "MaxItemsPath", "ManifestType", "Transformation"}
ITEM_BATCHER_KEYS = {"MaxItemsPerBatch", "MaxItemsPerBatchPath", "MaxInputBytesPerBatch",
                     "MaxInputBytesPerBatchPath", "BatchInput"}
PROCESSOR_CONFIG_KEYS = {"Mode", "ExecutionType"}
RESULT_WRITER_KEYS = {"Resource", "Parameters", "Arguments", "WriterConfig"}

ENUMS = {
    ("ProcessorConfig", "Mode"): {"INLINE", "DISTRIBUTED"},
    ("ProcessorConfig", "ExecutionType"): {"STANDARD", "EXPRESS"},
    ("ReaderConfig", "InputType"): {"CSV", "JSON", "JSONL", "MANIFEST", "PARQUET"},
    ("ReaderConfig", "CSVHeaderLocation"): {"FIRST_ROW", "GIVEN"},
    ("Retry", "JitterStrategy"): {"FULL", "NONE"},
}

# What moto 5.2.5's interpreter (the tests' Step Functions) executes of the above.
MOTO_INPUT_TYPES = {"CSV", "JSON"}

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_:.]+)\}")


# ------------------------------------------------------------------ the walk


class Checker:
    def __init__(self, moto: bool = True):
        self.moto = moto
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def keys(self, where: str, obj, allowed: set[str], what: str) -> bool:
        if not isinstance(obj, dict):
            self.problem(where, f"{what} must be a JSON object, not {type(obj).__name__}")
            return False
        for key in obj:
            if key not in allowed:
                self.problem(where, f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})")
        return True

    def enum(self, where: str, section: str, obj: dict, key: str) -> None:
        allowed = ENUMS[(section, key)]
        if key in obj and obj[key] not in allowed:
            self.problem(where, f"{section}.{key} is {obj[key]!r}, not one of {', '.join(sorted(allowed))}")

    def machine(self, machine, scope: str, allowed: set[str], what: str) -> None:
        """A state machine, a Map's ItemProcessor/Iterator or a Parallel branch: one naming scope."""
        if not self.keys(scope, machine, allowed, what):
            return
        states = machine.get("States")
        if not isinstance(states, dict) or not states:
            self.problem(scope, f"{what} needs a non-empty States object")
            return
        start = machine.get("StartAt")
        if start not in states:
            self.problem(scope, f"StartAt {start!r} names no state of this scope (states: {', '.join(states)})")
        for name, state in states.items():
            self.state(name, state, states, scope)

    def target(self, where: str, field: str, name, states: dict) -> None:
        if name not in states:
            self.problem(where, f"{field} {name!r} names no state of this scope (states: {', '.join(states)})")

    def state(self, name: str, state, states: dict, scope: str) -> None:
        where = f"state {name!r}" + (f" (in {scope})" if scope != "top level" else "")
        if not isinstance(state, dict):
            self.problem(where, "a state must be a JSON object")
            return
        typ = state.get("Type")
        if typ not in STATE_KEYS:
            self.problem(where, f"Type {typ!r} is not one of {', '.join(sorted(STATE_KEYS))}")
            return
        self.keys(where, state, STATE_KEYS[typ], f"a {typ} state")

        if typ in NEEDS_NEXT_OR_END:
            if ("Next" in state) == ("End" in state):
                self.problem(where, "needs exactly one of Next and End")
            if "End" in state and state["End"] is not True:
                self.problem(where, "End must be true")
        if "Next" in state:
            self.target(where, "Next", state["Next"], states)
        if typ == "Choice":
            if "Default" in state:
                self.target(where, "Default", state["Default"], states)
            choices = state.get("Choices")
            if not isinstance(choices, list) or not choices:
                self.problem(where, "Choices must be a non-empty array")
            else:
                for i, rule in enumerate(choices):
                    if not isinstance(rule, dict) or "Next" not in rule:
                        self.problem(where, f"Choices[{i}] has no Next")
                    else:
                        self.target(where, f"Choices[{i}].Next", rule["Next"], states)

        for i, retrier in enumerate(state.get("Retry") or []):
            w = f"{where} Retry[{i}]"
            if self.keys(w, retrier, RETRY_KEYS, "a Retry entry"):
                self.error_equals(w, retrier)
                self.enum(w, "Retry", retrier, "JitterStrategy")
        for i, catcher in enumerate(state.get("Catch") or []):
            w = f"{where} Catch[{i}]"
            if self.keys(w, catcher, CATCH_KEYS, "a Catch entry"):
                self.error_equals(w, catcher)
                if "Next" not in catcher:
                    self.problem(w, "a Catch entry needs Next")
                else:
                    self.target(w, "Next", catcher["Next"], states)

        if typ == "Map":
            self.map_state(where, name, state)
        if typ == "Parallel":
            for i, branch in enumerate(state.get("Branches") or []):
                self.machine(branch, f"{name}.Branches[{i}]", BRANCH_KEYS, "a Parallel branch")

    def error_equals(self, where: str, entry: dict) -> None:
        names = entry.get("ErrorEquals")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            self.problem(where, "ErrorEquals must be a non-empty array of error names")

    def map_state(self, where: str, name: str, state: dict) -> None:
        processor = state.get("ItemProcessor")
        if processor is not None:
            if self.keys(f"{where} ItemProcessor", processor, ITEM_PROCESSOR_KEYS, "ItemProcessor"):
                config = processor.get("ProcessorConfig")
                if config is not None:
                    w = f"{where} ItemProcessor.ProcessorConfig"
                    if self.keys(w, config, PROCESSOR_CONFIG_KEYS, "ProcessorConfig"):
                        self.enum(w, "ProcessorConfig", config, "Mode")
                        self.enum(w, "ProcessorConfig", config, "ExecutionType")
                        if self.moto and config.get("ExecutionType") == "EXPRESS":
                            self.problem(w, "ExecutionType EXPRESS: moto 5.2.5 (the tests' Step Functions) runs only STANDARD child executions")
                self.machine(processor, f"{name}.ItemProcessor", ITEM_PROCESSOR_KEYS, "ItemProcessor")
        iterator = state.get("Iterator")
        if iterator is not None:
            self.machine(iterator, f"{name}.Iterator", ITERATOR_KEYS, "Iterator")

        reader = state.get("ItemReader")
        if reader is not None:
            w = f"{where} ItemReader"
            if self.keys(w, reader, ITEM_READER_KEYS, "ItemReader"):
                config = reader.get("ReaderConfig")
                if config is not None:
                    w = f"{where} ItemReader.ReaderConfig"
                    if self.keys(w, config, READER_CONFIG_KEYS, "ReaderConfig"):
                        self.enum(w, "ReaderConfig", config, "InputType")
                        self.enum(w, "ReaderConfig", config, "CSVHeaderLocation")
                        if self.moto and config.get("InputType", "CSV") not in MOTO_INPUT_TYPES:
                            self.problem(w, f"InputType {config.get('InputType')!r}: moto 5.2.5 (the tests' Step Functions) reads only CSV and JSON")
        batcher = state.get("ItemBatcher")
        if batcher is not None:
            self.keys(f"{where} ItemBatcher", batcher, ITEM_BATCHER_KEYS, "ItemBatcher")
            if self.moto:
                self.problem(f"{where} ItemBatcher", "moto 5.2.5 (the tests' Step Functions) does not batch items: remove ItemBatcher")
        writer = state.get("ResultWriter")
        if writer is not None:
            self.keys(f"{where} ResultWriter", writer, RESULT_WRITER_KEYS, "ResultWriter")
        if self.moto and isinstance(state.get("ToleratedFailurePercentage"), int) \
                and not isinstance(state.get("ToleratedFailurePercentage"), bool):
            self.problem(where, "an integer ToleratedFailurePercentage is refused by moto 5.2.5 (the tests' Step Functions); omit it for 0")


def check(definition, moto: bool = True) -> list[str]:
    checker = Checker(moto=moto)
    checker.machine(definition, "top level", MACHINE_KEYS, "the state machine")
    return checker.problems


# ------------------------------------------------------------------ DefinitionSubstitutions


def template_substitutions(template_path: str, definition_path: str) -> set[str] | None:
    """The DefinitionSubstitutions keys of the resource whose DefinitionUri is definition_path.

    A line scanner, not a YAML parser (the standard library has none, and CloudFormation's short
    tags defeat generic ones): enough for this repository's block-style template."""
    wanted = os.path.normpath(os.path.relpath(definition_path, os.path.dirname(os.path.abspath(template_path))))
    with open(template_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    resource_start = None
    blocks: list[tuple[int, int]] = []
    for i, line in enumerate(lines):
        if re.match(r"^  [A-Za-z0-9]+:\s*(#.*)?$", line):
            if resource_start is not None:
                blocks.append((resource_start, i))
            resource_start = i
        elif re.match(r"^\S", line) and resource_start is not None:
            blocks.append((resource_start, i))
            resource_start = None
    if resource_start is not None:
        blocks.append((resource_start, len(lines)))
    for start, end in blocks:
        body = lines[start:end]
        uri = [m.group(1) for m in (re.match(r"^\s+DefinitionUri:\s*['\"]?([^'\"#\s]+)", l) for l in body) if m]
        if not uri or os.path.normpath(uri[0]) != wanted:
            continue
        keys: set[str] = set()
        for j, line in enumerate(body):
            m = re.match(r"^(\s+)DefinitionSubstitutions:\s*$", line)
            if not m:
                continue
            indent = len(m.group(1))
            child_indent = None
            for child in body[j + 1:]:
                if not child.strip() or child.lstrip().startswith("#"):
                    continue
                ci = len(child) - len(child.lstrip())
                if ci <= indent:
                    break
                child_indent = child_indent or ci
                km = re.match(r"^\s+([A-Za-z0-9_:.]+):", child)
                if ci == child_indent and km:
                    keys.add(km.group(1))
        return keys
    return None


def check_substitutions(text: str, template_path: str, definition_path: str) -> list[str]:
    declared = template_substitutions(template_path, definition_path)
    if declared is None:
        return [f"{template_path}: no resource has DefinitionUri {definition_path}"]
    used = set(PLACEHOLDER.findall(text))
    problems = []
    for name in sorted(used - declared):
        problems.append(f"placeholder ${{{name}}} is not in the template's DefinitionSubstitutions: it would deploy as literal text")
    for name in sorted(declared - used):
        problems.append(f"DefinitionSubstitutions.{name} in {template_path} is used nowhere in the definition")
    return problems


# ------------------------------------------------------------------ selftest


def _walk_states(machine, scope="top level"):
    """(scope, name, state) for every state, nested ones included."""
    for name, state in (machine.get("States") or {}).items():
        yield scope, name, state
        for key in ("ItemProcessor", "Iterator"):
            if isinstance(state.get(key), dict):
                yield from _walk_states(state[key], f"{name}.{key}")
        for i, branch in enumerate(state.get("Branches") or []):
            yield from _walk_states(branch, f"{name}.Branches[{i}]")


def _first(definition, predicate, nested=False):
    for scope, name, state in _walk_states(definition):
        if predicate(state) and (not nested or scope != "top level"):
            return name, state
    raise SystemExit("selftest: the definition has no state to mutate for this case; update the selftest")


def _mutations(definition):
    """(description, mutate(definition) -> (state name, key the message must name))."""

    def retry_key(d):
        name, state = _first(d, lambda s: s.get("Retry"))
        state["Retry"][0]["MaxAttempt"] = state["Retry"][0].pop("MaxAttempts", 3)
        return name, "MaxAttempt"

    def nested_retry_key(d):
        name, state = _first(d, lambda s: s.get("Retry"), nested=True)
        state["Retry"][0]["BackofRate"] = 2
        return name, "BackofRate"

    def catch_key(d):
        name, state = _first(d, lambda s: s.get("Catch"))
        state["Catch"][0]["ResultPth"] = state["Catch"][0].pop("ResultPath", "$.error")
        return name, "ResultPth"

    def item_reader_key(d):
        name, state = _first(d, lambda s: isinstance(s.get("ItemReader"), dict))
        state["ItemReader"]["Paramters"] = state["ItemReader"].pop("Parameters", {})
        return name, "Paramters"

    def reader_config_key(d):
        name, state = _first(d, lambda s: isinstance(s.get("ItemReader", {}).get("ReaderConfig"), dict))
        config = state["ItemReader"]["ReaderConfig"]
        config["CSVHeaderLocaton"] = config.pop("CSVHeaderLocation", "FIRST_ROW")
        return name, "CSVHeaderLocaton"

    def reader_config_value(d):
        name, state = _first(d, lambda s: isinstance(s.get("ItemReader", {}).get("ReaderConfig"), dict))
        state["ItemReader"]["ReaderConfig"]["InputType"] = "CVS"
        return name, "CVS"

    def processor_config_key(d):
        name, state = _first(d, lambda s: isinstance(s.get("ItemProcessor", {}).get("ProcessorConfig"), dict))
        config = state["ItemProcessor"]["ProcessorConfig"]
        config["ExecutionTyp"] = config.pop("ExecutionType", "STANDARD")
        return name, "ExecutionTyp"

    def processor_config_value(d):
        name, state = _first(d, lambda s: isinstance(s.get("ItemProcessor", {}).get("ProcessorConfig"), dict))
        state["ItemProcessor"]["ProcessorConfig"]["Mode"] = "DISTRIBUTD"
        return name, "DISTRIBUTD"

    def item_batcher_key(d):
        name, state = _first(d, lambda s: s.get("Type") == "Map")
        state["ItemBatcher"] = {"MaxItemsPerBach": 10}
        return name, "MaxItemsPerBach"

    def express_children(d):
        name, state = _first(d, lambda s: isinstance(s.get("ItemProcessor", {}).get("ProcessorConfig"), dict))
        state["ItemProcessor"]["ProcessorConfig"]["ExecutionType"] = "EXPRESS"
        return name, "EXPRESS"

    def tolerated_percentage(d):
        name, state = _first(d, lambda s: s.get("Type") == "Map")
        state["ToleratedFailurePercentage"] = 5
        return name, "ToleratedFailurePercentage"

    def state_key(d):
        name, state = _first(d, lambda s: s.get("Type") == "Task")
        state["TimeoutSecond"] = state.pop("TimeoutSeconds", 900)
        return name, "TimeoutSecond"

    def next_target(d):
        name, state = _first(d, lambda s: "Next" in s)
        state["Next"] += "x"
        return name, state["Next"]

    def catch_target(d):
        name, state = _first(d, lambda s: s.get("Catch"))
        state["Catch"][0]["Next"] += "x"
        return name, state["Catch"][0]["Next"]

    def choice_target(d):
        name, state = _first(d, lambda s: s.get("Type") == "Choice")
        state["Choices"][-1]["Next"] += "x"
        return name, state["Choices"][-1]["Next"]

    def nested_target_in_outer_scope(d):
        # A child state may not jump to a state of the parent machine.
        outer = next(iter(d["States"]))
        name, state = _first(d, lambda s: isinstance(s.get("ItemProcessor"), dict))
        child_name, child = next(iter(state["ItemProcessor"]["States"].items()))
        child.pop("End", None)
        child["Next"] = outer
        return child_name, outer

    def nested_start_at(d):
        name, state = _first(d, lambda s: isinstance(s.get("ItemProcessor"), dict))
        state["ItemProcessor"]["StartAt"] += "x"
        return name + ".ItemProcessor", state["ItemProcessor"]["StartAt"]

    return [
        ("a misspelt Retry key", retry_key),
        ("a misspelt Retry key in a nested state", nested_retry_key),
        ("a misspelt Catch key", catch_key),
        ("a misspelt ItemReader key", item_reader_key),
        ("a misspelt ReaderConfig key", reader_config_key),
        ("a bad ReaderConfig.InputType", reader_config_value),
        ("a misspelt ProcessorConfig key", processor_config_key),
        ("a bad ProcessorConfig.Mode", processor_config_value),
        ("a misspelt ItemBatcher key", item_batcher_key),
        ("EXPRESS child executions (moto)", express_children),
        ("an integer ToleratedFailurePercentage (moto)", tolerated_percentage),
        ("a misspelt state key", state_key),
        ("a Next naming no state", next_target),
        ("a Catch Next naming no state", catch_target),
        ("a Choices Next naming no state", choice_target),
        ("a child Next naming a state of the parent", nested_target_in_outer_scope),
        ("an ItemProcessor StartAt naming no state", nested_start_at),
    ]


def selftest(definition) -> int:
    clean = check(definition)
    if clean:
        print("selftest: the unmutated definition is not clean:", *clean, sep="\n  ", file=sys.stderr)
        return 1
    failed = 0
    for description, mutate in _mutations(definition):
        mutated = copy.deepcopy(definition)
        state_name, token = mutate(mutated)
        problems = check(mutated)
        hit = [p for p in problems if repr(state_name) in p and token in p] or \
              [p for p in problems if state_name in p and token in p]
        if hit:
            print(f"selftest ok: {description}: {hit[0].split(' (allowed:')[0]}")
        else:
            failed += 1
            print(f"selftest FAILED: {description} (state {state_name!r}, {token!r}) not reported; got: {problems}",
                  file=sys.stderr)
    # The placeholder check, on a template written here.
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        definition_path = os.path.join(tmp, "sm.asl.json")
        template_path = os.path.join(tmp, "template.yaml")
        with open(template_path, "w", encoding="utf-8") as f:
            f.write("Resources:\n  Sm:\n    Type: AWS::Serverless::StateMachine\n    Properties:\n"
                    "      DefinitionUri: sm.asl.json\n      DefinitionSubstitutions:\n"
                    "        # a comment\n        Used: !GetAtt F.Arn\n        Unused: x\n"
                    "      Policies:\n        - Version: '2012-10-17'\n")
        problems = check_substitutions('{"a": "${Used}", "b": "${Missing}"}', template_path, definition_path)
        expected = ["${Missing}", "DefinitionSubstitutions.Unused"]
        if len(problems) == 2 and all(any(e in p for p in problems) for e in expected):
            print(f"selftest ok: placeholders vs DefinitionSubstitutions: {problems}")
        else:
            failed += 1
            print(f"selftest FAILED: placeholder check reported {problems}", file=sys.stderr)
    total = len(_mutations(definition)) + 1
    print(f"selftest: {total - failed} of {total} mutations caught")
    return 1 if failed else 0


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("definition", help="the ASL definition (JSON)")
    parser.add_argument("--template", help="check the ${...} placeholders against this SAM template's DefinitionSubstitutions")
    parser.add_argument("--no-moto", action="store_true", help="allow what moto 5.2.5 cannot execute")
    parser.add_argument("--selftest", action="store_true", help="mutate the definition and check that each mutation is caught")
    args = parser.parse_args(argv)

    try:
        with open(args.definition, encoding="utf-8") as f:
            text = f.read()
        definition = json.loads(text)
    except (OSError, ValueError) as e:
        print(f"{args.definition}: {e}", file=sys.stderr)
        return 2
    if not isinstance(definition, dict):
        print(f"{args.definition}: not a JSON object", file=sys.stderr)
        return 2

    if args.selftest:
        return selftest(definition)

    problems = check(definition, moto=not args.no_moto)
    if args.template:
        problems += check_substitutions(text, args.template, args.definition)
    for p in problems:
        print(f"{args.definition}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.definition}: keys, transitions{' and substitutions' if args.template else ''} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
