"""Fixtures that start the sandbox upstream server for tests (filled in by the upstream
work: `sandbox`, `sandbox_settings`)."""
