"""The embedded default: a bundled tiny MoE trained on synthetic domains, and its shift testbed."""

from pathlib import Path

DEMO_MODEL = Path(__file__).resolve().parent / "model"
DEMO_TASK = "demo"
