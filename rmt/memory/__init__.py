"""rmt.memory room (see docs/architecture.md)."""
