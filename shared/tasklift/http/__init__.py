"""HTTP: host-neutral handlers over the core, problem+json, and the ASGI (FastAPI) app.

Every host (ASGI, Azure Functions, AWS Lambda, the local emulator) converts its own request type
into :class:`~tasklift.http.types.HttpRequest`, calls :func:`~tasklift.http.routes.handle`, and
converts the :class:`~tasklift.http.types.HttpResponse` back. No rule lives in an adapter.
"""
