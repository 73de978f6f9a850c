"""Worker entry points: the control worker (hub), agency workers, and the all-in-one dev set."""
