"""Contract tests every source kind must pass (issue 13 point 7)."""
