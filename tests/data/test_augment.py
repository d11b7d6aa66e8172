"""Flips and quarter turns, identical on every frame of a window."""

import numpy as np
import pytest
import torch

from prediff.data import RandomFlipRotate, flip_rotate


def _reference(frames, hflip, vflip, turns):
    out = []
    for frame in frames:  # frame by frame, channel by channel
        channels = []
        for c in range(frame.shape[-1]):
            img = frame[..., c]
            if hflip:
                img = img[:, ::-1]
            if vflip:
                img = img[::-1, :]
            channels.append(np.rot90(img, k=turns))
        out.append(np.stack(channels, axis=-1))
    return np.stack(out)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("vflip", [False, True])
def test_flip_rotate_matches_per_frame_reference(hflip, vflip, turns):
    frames = torch.rand(4, 5, 5, 2)
    got = flip_rotate(frames, hflip, vflip, turns)
    np.testing.assert_array_equal(got.numpy(), _reference(frames.numpy(), hflip, vflip, turns))


def test_random_transform_is_identical_across_frames_and_recorded():
    base = torch.rand(6, 6, 1)
    frames = base.expand(5, 6, 6, 1).clone()  # a static scene: every output frame must stay equal
    transform = RandomFlipRotate(generator=torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(40):
        item = transform({"frames": frames, "index": 3})
        out = item["frames"]
        assert all(torch.equal(out[0], out[t]) for t in range(5))
        hflip, vflip, turns = item["augmentation"].tolist()
        np.testing.assert_array_equal(out.numpy(), _reference(frames.numpy(), hflip, vflip, turns))
        assert item["index"] == 3
        seen.add((hflip, vflip, turns))
    assert len(seen) > 8  # several of the 16 combinations occur
    batch = RandomFlipRotate(p_hflip=1.0, p_vflip=0.0, rotate=False)(frames)
    assert torch.equal(batch, torch.flip(frames, dims=(-2,)))


def test_bad_input():
    with pytest.raises(ValueError, match="p_hflip"):
        RandomFlipRotate(p_hflip=1.5)
    with pytest.raises(ValueError, match="square"):
        RandomFlipRotate()(torch.zeros(2, 4, 6, 1))
    with pytest.raises(ValueError, match="at least 4"):
        flip_rotate(torch.zeros(4, 4, 1), True, False, 0)
