"""CUDA paths: SDPA kernels, bfloat16 and xformers against the reference path. Skipped without a CUDA device."""

import pytest
import torch

from prediff import EarthformerUNetModel
from tests.conftest import relative_error

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY_UNET = dict(input_shape=(3, 8, 8, 32), target_shape=(2, 8, 8, 32), base_units=64, depth=(1, 1), num_heads=4)


def unet_and_inputs():
    torch.manual_seed(0)
    model = EarthformerUNetModel(**TINY_UNET).cuda().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    sample = torch.randn(2, 2, 8, 8, 32, device="cuda")
    context = torch.randn(2, 3, 8, 8, 32, device="cuda")
    return model, (sample, torch.tensor([10, 500], device="cuda"), context)


@pytest.mark.parametrize("backend", ["sdpa", "xformers"])
def test_cuda_backends_match_reference(backend):
    if backend == "xformers":
        pytest.importorskip("xformers")
    model, inputs = unet_and_inputs()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        model.set_attention_backend("reference")
        reference = model(*inputs).sample
        model.set_attention_backend(backend)
        out = model(*inputs).sample
    assert relative_error(out, reference) < 1e-4


def test_bfloat16_autocast_close_to_float32():
    model, inputs = unet_and_inputs()
    with torch.no_grad():
        reference = model(*inputs).sample
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(*inputs).sample
    assert relative_error(out.float(), reference) < 5e-2
