"""The Celery app, publishing through the outbox, the runner and the reaper."""
