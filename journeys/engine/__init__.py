"""The journey engine: entries, the step runner, the delivery outbox, schedules."""
