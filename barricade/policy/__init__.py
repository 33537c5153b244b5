"""Policy: verdicts, the per-phase pipeline, and the built-in checks."""
