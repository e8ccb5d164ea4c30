"""Trivial echo function for the Python 3 runtime, the counterpart of
tests/functions/echo-rs: {"sleep_ms": N} sleeps first, {"fail": true} fails,
{"quiet": true} answers without echoing the event."""

import os
import time


def echo(event, context):
    opts = event if isinstance(event, dict) else {}
    if opts.get("sleep_ms"):
        time.sleep(opts["sleep_ms"] / 1000.0)
    if opts.get("fail") is True:
        raise RuntimeError(f"echo-python failed on purpose (request {context.aws_request_id})")
    if opts.get("quiet") is True:
        return {"ok": True, "request_id": context.aws_request_id}
    return {
        "echo": event,
        "request_id": context.aws_request_id,
        "function_arn": context.invoked_function_arn,
        "memory": int(context.memory_limit_in_mb),
        "pid": os.getpid(),
    }
