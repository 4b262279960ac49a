"""case_bridge package."""
