import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)


def _import_torchvision() -> None:
    """CI installs PyPI's torchvision (a CUDA build) beside CPU torch, for sglang's imports
    (tests/test_sglang_conformance.py). Its C ops cannot load there, and `import torchvision` (which
    transformers and sglang both do) registers fakes for two of them and fails. Declaring those two
    schemas lets it import; no test runs a torchvision op."""
    import sys

    try:
        import torchvision  # noqa: F401
    except ImportError:
        return
    except RuntimeError:
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        for op in ("nms", "qnms"):
            if not hasattr(torch.ops.torchvision, op):
                torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401


_import_torchvision()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """family -> directory of a saved tiny random model, built once per test session."""
    from ttscale.tiny import FAMILIES, save_tiny_model

    root = tmp_path_factory.mktemp("models")
    return {family: save_tiny_model(family, root / family) for family in FAMILIES}


@pytest.fixture
def cli():
    """The `ttscale` command line in-process (no interpreter start-up): returns (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from ttscale.cli import app

    def invoke(*args):
        result = CliRunner().invoke(app, [str(a) for a in args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr
    return invoke


@pytest.fixture(scope="session")
def demo_backend():
    """The hf backend on the bundled demo model (fp32 CPU), as `ttscale serve` and `ttscale run` load it."""
    from ttscale.backends.hf import HFBackend
    from ttscale.demo import DEMO_MODEL

    return HFBackend(str(DEMO_MODEL), device="cpu", decode="dynamic")
