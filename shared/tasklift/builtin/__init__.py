"""The original demo's task types, registered on import."""

from tasklift.builtin import vector_processing, web_scrape

__all__ = ["vector_processing", "web_scrape"]
