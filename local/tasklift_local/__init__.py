"""The local emulator of tasklift's function hosts (``tasklift emulate azure|aws``).

It hosts the real handlers in ``functions/azure`` and ``functions/aws`` on a laptop the way the
clouds do: Azure's by discovering the functions registered on the ``func.FunctionApp`` and calling
each with the request type it declares; AWS's by reading the SAM template and calling each Lambda
handler with an API Gateway HTTP API (payload 2.0) event and a Lambda context. Both enforce the
platform limits (timeouts, payload caps, buffering) and fail a request the way the platform does,
so what breaks in the cloud breaks here first. See docs/hosts.md for the table of limits.
"""
