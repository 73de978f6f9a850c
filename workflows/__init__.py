"""The BPF description format, its validation, and the interpreter workflow."""
