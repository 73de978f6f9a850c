"""Where the tests find the project's own files (the checkout, not the installed package)."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = PROJECT_ROOT / "renkei" / "definitions"
