"""Management commands of the ``cdp`` CLI, registered on the app in one place."""

from flask import Flask

from cdp.commands import accounts, audit, content, hcp, loyalty, privacy, runtime, seed, sources


def init_app(app: Flask) -> None:
    for command in (
        accounts.users,
        accounts.tokens,
        audit.audit_group,
        sources.sources_group,
        runtime.worker,
        runtime.serve,
        runtime.drain,
        seed.seed_demo,
        privacy.privacy_group,
        content.content_group,
        *(loyalty.partners_group, loyalty.loyalty_group),
        hcp.hcp_group,
    ):
        app.cli.add_command(command)
