"""tasklift on AWS Lambda: Mangum over the ASGI app, one handler name per function of template.yaml.

Mangum buffers a response until the app finishes it (API Gateway's Lambda integration has no
streaming), so the stream endpoint runs the core's bounded-window SSE mode: it answers with the
events of a short window and a small ``retry:``, and EventSource reconnects with Last-Event-ID.
The window is set here, before tasklift reads its settings, and in template.yaml; it must stay
well under API Gateway's 30 s integration timeout. Live streams on AWS need Lambda response
streaming through the Lambda Web Adapter (docs/hosts.md).
"""

import os

os.environ.setdefault("TASKLIFT_SSE_WINDOW_SECONDS", "20")

from mangum import Mangum  # noqa: E402 - after the window is set

from tasklift.http.asgi import WithoutLifespan, create_app  # noqa: E402

# Built once per execution environment, at init (outside the handler), so warm invocations reuse
# the app. Lifespan "off": Mangum would run the app's startup and shutdown around every
# invocation, building and closing the API runtime (pools, event hub) each time; Lambda freezes or
# ends the environment without a shutdown to run it against. So the runtime is built once instead,
# at the first invocation, on the loop Mangum runs every invocation on (WithoutLifespan).
handler = Mangum(WithoutLifespan(create_app()), lifespan="off")

# One Lambda function per endpoint (template.yaml); each routes through the same app.
submit_task = list_tasks = get_task = cancel_task = task_logs = task_output = stream_task = task_result = handler
retry_task = send_signal = task_steps = handler
task_types = healthz = readyz = not_found = handler
get_operation_status = get_google_operation = handler
