"""Task states and transitions, the registry of task types, the service and the TaskContext."""
