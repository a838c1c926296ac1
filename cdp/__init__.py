"""CarePath CDP core: the application factory and the domain everything else builds on."""

from cdp.app import create_app

__all__ = ["create_app"]
__version__ = "0.1.0"
