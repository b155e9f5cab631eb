"""rmt.training room (see docs/architecture.md)."""
