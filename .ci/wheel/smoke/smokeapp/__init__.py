"""The smoke project's app: one model and two tasks."""
