"""rmt.evaluation room (see docs/architecture.md)."""
