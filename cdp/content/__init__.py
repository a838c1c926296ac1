"""The content library: items with MLR-reviewed versions, sandboxed rendering, and send guards.

- ``cdp.content.operations``: create, edit, submit, approve, reject, withdraw, preview.
- ``cdp.content.library``: reading items, versions, review history, the review queue.
- ``cdp.content.rendering``: sandboxed Jinja with profile traits and journey context.
- ``cdp.content.guards``: ``check_sendable`` / ``prepare_send`` (send time) and
  ``check_journey_content`` (journey validation); the journey engine calls these.
"""
