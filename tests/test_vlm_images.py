"""The tiny LLaVA's image preprocessing (saesteer.embedded.vlm.image_tensor): no model needed."""

from __future__ import annotations

import pytest
import torch

from saesteer.embedded.vlm import image_tensor
from saesteer.errors import SaesteerError


def test_image_tensor_composites_cutouts_on_white_and_crops_photos() -> None:
    rgba = torch.zeros(40, 20, 4, dtype=torch.uint8)
    rgba[10:30, 5:15] = torch.tensor([255, 0, 0, 255], dtype=torch.uint8)  # an opaque red block
    x = image_tensor(rgba, size=64)
    assert x.shape == (3, 64, 64)
    assert torch.allclose(x[:, 0, 0], torch.ones(3))                      # background is white
    assert x[0, 32, 32] > 0.99 and x[1, 32, 32] < 0.01                    # the block sits in the centre
    photo = torch.zeros(3, 30, 90)
    photo[:, :, 30:60] = 1.0                                               # only the centre square is white
    assert torch.allclose(image_tensor(photo, size=16), torch.ones(3, 16, 16), atol=1e-5)


def test_image_tensor_rejects_bad_shapes() -> None:
    with pytest.raises(SaesteerError):
        image_tensor(torch.zeros(8, 8))
    with pytest.raises(SaesteerError):
        image_tensor(torch.zeros(2, 8, 8))
