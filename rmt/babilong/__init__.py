"""rmt.babilong room (see docs/architecture.md)."""
