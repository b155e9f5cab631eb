"""rmt.serving room (see docs/architecture.md)."""
