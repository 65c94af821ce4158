import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """family -> directory of a saved tiny random model, built once per test session."""
    from ttscale.tiny import FAMILIES, save_tiny_model

    root = tmp_path_factory.mktemp("models")
    return {family: save_tiny_model(family, root / family) for family in FAMILIES}
