"""`python -m keel.components.executor`: the entry point of every Keel step.

It takes the arguments KFP gives a containerized Python component
(`--executor_input JSON --function_to_execute NAME`), imports the step from
the installed package and hands it to KFP's own Executor, which reads the
inputs and writes the outputs exactly as `kfp.dsl.executor_main` would.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

# What kfp's own step commands set: kfp.dsl loads only its runtime half, so a
# step does not import the compiler (and @keel_component returns the plain function).
os.environ.setdefault("_KFP_RUNTIME", "true")

from keel.components._common.images import COMPONENT_MODULES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.components.executor",
                                     description="Run one Keel pipeline step (KFP executor protocol).")
    parser.add_argument("--executor_input", required=True, help="ExecutorInput JSON from the KFP orchestrator")
    parser.add_argument("--function_to_execute", required=True, choices=sorted(COMPONENT_MODULES), metavar="NAME",
                        help="the component function to run")
    args, _ = parser.parse_known_args(argv)  # KFP may append flags of its own; the executor ignores them as KFP's does
    try:
        executor_input = json.loads(args.executor_input)
    except json.JSONDecodeError as err:
        parser.error(f"--executor_input is not JSON: {err}")
    from kfp.dsl import executor

    module = importlib.import_module(COMPONENT_MODULES[args.function_to_execute])
    executor.Executor(executor_input=executor_input, function_to_execute=getattr(module, args.function_to_execute)).execute()
    return 0


if __name__ == "__main__":
    sys.exit(main())
