"""The embedded default: a bundled tiny MoE trained on synthetic domains, and its shift testbed.

The bundled model is named `demo` wherever a model is accepted (`--model demo`, `ttscale models demo`),
and run configs record it by that name, so a run directory does not depend on where ttscale is installed.
"""

from pathlib import Path

DEMO_MODEL = Path(__file__).resolve().parent / "model"
DEMO_MODEL_NAME = "demo"
DEMO_TASK = "demo"


def resolve_model(name: str) -> str:
    """The directory of a bundled model named `name`; any other name (hub id, directory) unchanged."""
    return str(DEMO_MODEL) if name == DEMO_MODEL_NAME else name


def model_name(model: str) -> str:
    """How a run records a model: `demo` for the bundled model, even when given as a path (old configs)."""
    path = Path(model)
    return DEMO_MODEL_NAME if path.parts[-3:] == ("ttscale", "demo", "model") else model
