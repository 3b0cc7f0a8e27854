import numpy as np
import pytest

from tapkit.testing import make_tiny_model_files


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
    """A random tiny TAP as an official-format .pkl, with tokenizer and concept file."""
    return make_tiny_model_files(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_files):
    import tapkit

    return tapkit.load_model(tiny_files.checkpoint, tokenizer=tiny_files.tokenizer, concepts=tiny_files.concepts, device="cpu")


@pytest.fixture
def one_torch_thread():
    """Small ops on a shared 2-core machine run far faster on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rgb_image():
    rng = np.random.default_rng(0)
    image = (rng.random((96, 144, 3)) * 255).astype(np.uint8)
    image[20:60, 30:90] = (220, 30, 30)
    return image


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory):
    """A random tiny SAM saved as the official release is (torch.save of the state dict)."""
    from tapkit.testing import make_tiny_sam_checkpoint

    return make_tiny_sam_checkpoint(tmp_path_factory.mktemp("tiny_sam") / "tiny_sam.pth")


@pytest.fixture(scope="session")
def tiny_sam(tiny_sam_checkpoint):
    import tapkit

    return tapkit.load_model(tiny_sam_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A 6-image synthetic world (64 px) with a 64-d stand-in concept file, its
    SemanticSA-1B shards and a caption tokenizer."""
    from training_helpers import make_tiny_world

    return make_tiny_world(tmp_path_factory.mktemp("tiny_world"))
