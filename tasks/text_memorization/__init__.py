"""Built-in task; see README.md and task.py."""
