"""CLI commands of this room (filled in by the room's issue)."""


def register(app):
    """Add this module's commands to the `rmt` app."""
