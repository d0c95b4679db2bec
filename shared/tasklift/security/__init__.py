"""Authentication, tenant isolation, limits and outbound-request (SSRF) defence.

- :mod:`~tasklift.http.guard`: the gate in :func:`tasklift.http.routes.handle` (every host);
- :mod:`~tasklift.security.identity`: the caller, and whose tasks it may see;
- :mod:`~tasklift.security.api_keys`, :mod:`~tasklift.security.oidc`: the two credentials;
- :mod:`~tasklift.security.stream_tokens`: signed, task-scoped links for EventSource;
- :mod:`~tasklift.security.limits`: per-principal limits counted in Redis and PostgreSQL;
- :mod:`~tasklift.security.headers`: security headers (CSP) on every response;
- :mod:`~tasklift.security.ssrf`: which addresses ``web_scrape`` may reach;
- :mod:`~tasklift.security.redaction`: secrets never reach a log line.

docs/security.md has the threat model.
"""
