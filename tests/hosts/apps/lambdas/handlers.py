"""Lambda handlers for the AWS emulator's limit tests."""

import os
import time


def echo(event, context):
    """Return the event and what the context said, as JSON."""
    ctx = {
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining": context.get_remaining_time_in_millis(),
        "aws_request_id": context.aws_request_id,
    }
    env = {k: os.environ.get(k) for k in ("PROBE_FROM_TEMPLATE", "PROBE_FROM_REF", "AWS_LAMBDA_FUNCTION_NAME")}
    return {"event": event, "context": ctx, "env": env, "pid": os.getpid()}


def slow(event, context):
    time.sleep(float((event.get("queryStringParameters") or {}).get("seconds", "3")))
    return {"statusCode": 200, "body": "late"}


def big(event, context):
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": "x" * (7 * 1024 * 1024)}


def boom(event, context):
    raise RuntimeError("the function failed")


def cookie(event, context):
    return {"statusCode": 201, "cookies": ["a=1", "b=2"], "headers": {"x-probe": "yes"}, "body": "ok"}
