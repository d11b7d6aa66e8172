"""The cuboid-attention toolkit against brute-force definitions and against its reference backend."""

import itertools

import pytest
import torch

from prediff.models.cuboid import (
    CuboidCrossAttentionLayer,
    CuboidSelfAttentionLayer,
    PatchMerging3D,
    PosEmbed,
    cross_pattern,
    cuboid_reorder,
    cuboid_reorder_reverse,
    self_pattern,
)
from prediff.models.cuboid.decomposition import (
    cross_attention_mask,
    effective_cuboid_and_shift,
    pad_thw,
    padding_amounts,
    relative_position_index,
    self_attention_mask,
    unpad_thw,
)
from tests.conftest import relative_error

STRATEGIES = list(itertools.product("ld", repeat=3))
CPU = torch.device("cpu")


def coordinate_grid(T, H, W):
    t, h, w = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([t, h, w], dim=-1)[None].float()  # (1, T, H, W, 3)


def brute_force_place(index, length, c, strategy):
    """(cuboid number, place) of ``index`` on an axis of length ``length`` with cuboid size ``c``, by definition:
    "local" puts index ``n * c + a`` into cuboid n at place a (contiguous blocks), "dilated" puts index
    ``a * (length / c) + n`` into cuboid n at place a (strided)."""
    if strategy == "l":
        return index // c, index % c
    stride = length // c
    return index % stride, index // stride


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reorder_matches_definition_and_inverts(strategy):
    T, H, W, cuboid = 4, 6, 6, (2, 3, 2)
    grid = coordinate_grid(T, H, W)
    reordered = cuboid_reorder(grid, cuboid, strategy)[0]
    n_cuboids = [length // c for length, c in zip((T, H, W), cuboid)]
    for t, h, w in itertools.product(range(T), range(H), range(W)):
        places = [brute_force_place(i, L, c, s) for i, L, c, s in zip((t, h, w), (T, H, W), cuboid, strategy)]
        n = (places[0][0] * n_cuboids[1] + places[1][0]) * n_cuboids[2] + places[2][0]
        a = (places[0][1] * cuboid[1] + places[1][1]) * cuboid[2] + places[2][1]
        assert reordered[n, a].tolist() == [t, h, w]
    x = torch.randn(2, T, H, W, 5)
    assert torch.equal(cuboid_reorder_reverse(cuboid_reorder(x, cuboid, strategy), cuboid, strategy, (T, H, W)), x)


def test_reorder_documented_example():
    grid = coordinate_grid(4, 1, 6)
    local = cuboid_reorder(grid, (2, 1, 3), "lll")[0, 0]
    dilated = cuboid_reorder(grid, (2, 1, 3), "ddd")[0, 0]
    assert {(int(t), int(w)) for t, _, w in local} == {(t, w) for t in (0, 1) for w in (0, 1, 2)}
    assert {(int(t), int(w)) for t, _, w in dilated} == {(t, w) for t in (0, 2) for w in (0, 2, 4)}


@pytest.mark.parametrize("padding_type", ["zeros", "ignore", "nearest"])
def test_padding_round_trip(padding_type):
    x = torch.randn(2, 5, 7, 3, 4)
    pad = padding_amounts((5, 7, 3), (2, 4, 3))
    assert pad == (1, 1, 0)
    padded = pad_thw(x, pad, padding_type)
    assert padded.shape == (2, 6, 8, 3, 4)
    restored = unpad_thw(padded, pad, padding_type)
    if padding_type == "nearest":
        # "nearest" resizes rather than pads (as the official code does): only the shape comes back exactly.
        assert restored.shape == x.shape
        assert torch.isin(padded, x).all() and torch.isin(restored, x).all()
    else:
        assert padded[:, 5:].abs().sum() == 0 and padded[:, :, 7:].abs().sum() == 0
        assert torch.equal(restored, x)


def test_effective_sizes():
    assert effective_cuboid_and_shift((13, 16, 16), (13, 1, 1), (0, 0, 0), "lll") == ((13, 1, 1), (0, 0, 0))
    assert effective_cuboid_and_shift((12, 16, 16), (13, 1, 1), (0, 0, 0), "lll") == ((12, 1, 1), (0, 0, 0))
    assert effective_cuboid_and_shift((6, 8, 8), (2, 4, 4), (1, 2, 2), "dll") == ((2, 4, 4), (0, 2, 2))
    assert effective_cuboid_and_shift((6, 3, 8), (2, 4, 4), (1, 2, 2), "lll") == ((2, 3, 4), (1, 0, 2))


def brute_force_self_mask(data_shape, cuboid, shift, strategy, padding_type):
    """Mask by definition: shift regions and valid (unpadded) flags of every place, looked up per place."""
    pad = padding_amounts(data_shape, cuboid)
    padded = [L + p for L, p in zip(data_shape, pad)]

    def region(i, L, c, s):
        if s == 0:
            return 0
        return 0 if i < L - c else (1 if i < L - s else 2)

    coords = cuboid_reorder(coordinate_grid(*padded), cuboid, strategy)[0].long()  # rolled-grid positions
    N, V, _ = coords.shape
    mask = torch.zeros(N, V, V, dtype=torch.bool)
    for n in range(N):
        for a in range(V):
            for b in range(V):
                pa, pb = coords[n, a].tolist(), coords[n, b].tolist()
                same = all(
                    region(pa[d], padded[d], cuboid[d], shift[d]) == region(pb[d], padded[d], cuboid[d], shift[d])
                    for d in range(3)
                )
                # Position p of the rolled tensor holds original index (p + s) mod L.
                valid = [all((p[d] + shift[d]) % padded[d] < data_shape[d] for d in range(3)) for p in (pa, pb)]
                if padding_type == "ignore" and any(pad):
                    same = same and valid[0] and valid[1]
                mask[n, a, b] = same
    return mask


@pytest.mark.parametrize(
    "data_shape,cuboid,shift,strategy,padding_type",
    [
        ((4, 6, 6), (2, 3, 3), (1, 1, 2), "lll", "zeros"),
        ((4, 6, 6), (2, 3, 3), (0, 1, 0), "ldl", "zeros"),
        ((3, 5, 6), (2, 3, 3), (0, 0, 0), "lll", "ignore"),
        ((3, 5, 6), (2, 3, 3), (1, 1, 1), "lll", "ignore"),
        ((3, 5, 4), (2, 3, 2), (0, 0, 1), "dll", "ignore"),
    ],
)
def test_self_attention_mask_matches_brute_force(data_shape, cuboid, shift, strategy, padding_type):
    mask = self_attention_mask(data_shape, cuboid, shift, tuple(strategy), padding_type, CPU)
    expected = brute_force_self_mask(data_shape, cuboid, shift, strategy, padding_type)
    assert mask is not None
    assert torch.equal(mask, expected)


def test_no_mask_when_nothing_is_masked():
    assert self_attention_mask((4, 6, 6), (2, 3, 3), (0, 0, 0), ("l",) * 3, "ignore", CPU) is None
    assert self_attention_mask((3, 6, 6), (2, 3, 3), (0, 0, 0), ("l",) * 3, "zeros", CPU) is None


def test_cross_mask_regions_and_padding():
    mask = cross_attention_mask(3, 4, (4, 4), 2, (2, 2), (1, 1), ("l",) * 3, "ignore", CPU)
    # x: T 3 -> 4 (padded right), two temporal groups of 2; memory: 4 frames, groups of 2.
    assert mask.shape == (2 * 2 * 2, 2 * 4, 2 * 4)
    x_valid = cuboid_reorder(pad_thw(torch.ones(1, 3, 4, 4, 1), (1, 0, 0), "zeros"), (2, 2, 2), "lll")[0, ..., 0] > 0
    assert torch.equal(mask.any(-1), x_valid)


def test_relative_position_index_matches_definition():
    cuboid = (2, 3, 2)
    index = relative_position_index(cuboid)
    places = list(itertools.product(range(2), range(3), range(2)))
    for i, p in enumerate(places):
        for j, q in enumerate(places):
            d = [a - b for a, b in zip(p, q)]
            expected = (d[0] + 1) * 5 * 3 + (d[1] + 2) * 3 + (d[2] + 1)
            assert index[i, j] == expected


def test_patterns():
    assert self_pattern("axial", (13, 16, 16, 64))[0] == [(13, 1, 1), (1, 16, 1), (1, 1, 16)]
    cuboids, strategies, shifts = self_pattern("video_swin", (13, 16, 16, 8))
    assert cuboids == [(2, 4, 4), (2, 4, 4)] and shifts == [(0, 0, 0), (1, 2, 2)]
    assert self_pattern("spatial_lg_4", (5, 16, 16, 8))[1] == [("l",) * 3, ("l",) * 3, ("d",) * 3]
    assert len(self_pattern("axial_space_dilate_4", (5, 16, 16, 8))[0]) == 5
    assert cross_pattern("cross_1x1", (13, 32, 32, 128)) == ([(1, 1)], [(0, 0)], [("l",) * 3], [1])
    assert cross_pattern("cross_4x4_heter", (13, 32, 32, 128))[1][2] == (2, 2)
    with pytest.raises(ValueError, match="unknown self_pattern 'axiall'"):
        self_pattern("axiall", (1, 2, 2, 1))
    with pytest.raises(ValueError, match="unknown cross_pattern"):
        cross_pattern("cross_3x3", (1, 2, 2, 1))


def test_patch_merging_groups_blocks_in_order():
    layer = PatchMerging3D(2, 3, (1, 2, 2), "zeros")
    x = torch.randn(1, 2, 4, 5, 2)
    merged_input = []
    padded = torch.nn.functional.pad(x, (0, 0, 0, 1))
    for dh, dw in itertools.product(range(2), range(2)):
        merged_input.append(padded[:, :, dh::2, dw::2])
    expected = layer.reduction(layer.norm(torch.cat(merged_input, dim=-1)))
    torch.testing.assert_close(layer(x), expected)


def test_pos_embed_types():
    x = torch.zeros(2, 3, 4, 5, 8)
    for typ in ("t+h+w", "t+hw"):
        out = PosEmbed(8, 3, 4, 5, typ)(x)
        assert out.shape == x.shape and out.abs().sum() > 0
    with pytest.raises(ValueError, match="pos_embed_type"):
        PosEmbed(8, 3, 4, 5, "t+h")


def compare_backends(layer, inputs):
    """Forward outputs and parameter gradients of the default backend against the reference backend."""
    layer.eval()
    results = {}
    for backend in ("reference", "sdpa"):
        layer.attention_backend = backend
        layer.zero_grad()
        leaves = [t.clone().requires_grad_(True) if t is not None else None for t in inputs]
        out = layer(*leaves)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
        sum((o * torch.linspace(-1, 1, o.numel()).reshape(o.shape)).sum() for o in outs).backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
        grads.update({f"input{i}": t.grad.clone() for i, t in enumerate(leaves) if t is not None})
        results[backend] = (outs, grads)
    (ref_out, ref_grads), (out, grads) = results["reference"], results["sdpa"]
    for a, b in zip(out, ref_out):
        assert relative_error(a, b) < 1e-5
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        assert relative_error(grads[name], ref_grads[name]) < 1e-5, name


@pytest.mark.parametrize("padding_type", ["zeros", "ignore", "nearest"])
@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 1, 1)])
@pytest.mark.parametrize("globals_mode", ["none", "shared", "separate", "separate_ratio2"])
def test_self_attention_default_backend_matches_reference(padding_type, shift, globals_mode):
    torch.manual_seed(0)
    ratio = 2 if globals_mode == "separate_ratio2" else 1
    layer = CuboidSelfAttentionLayer(
        16, 4, (2, 3, 3), shift, ("l", "d", "l"), padding_type,
        use_global_vector=globals_mode != "none",
        use_global_self_attn=True,
        separate_global_qkv=globals_mode.startswith("separate"),
        global_dim_ratio=ratio,
    )  # fmt: skip
    torch.nn.init.normal_(layer.relative_position_bias_table)
    x = torch.randn(2, 5, 6, 7, 16)
    global_vectors = torch.randn(2, 3, 16 * ratio) if globals_mode != "none" else None
    compare_backends(layer, [x, global_vectors])


@pytest.mark.parametrize("use_global_self_attn", [False, True])
def test_global_vectors_without_self_attention(use_global_self_attn):
    layer = CuboidSelfAttentionLayer(
        8, 2, (2, 2, 2), (0, 0, 0), "lll", "ignore", use_global_vector=True,
        use_global_self_attn=use_global_self_attn, separate_global_qkv=True,
    )  # fmt: skip
    compare_backends(layer, [torch.randn(1, 3, 4, 3, 8), torch.randn(1, 2, 8)])


@pytest.mark.parametrize("padding_type", ["zeros", "ignore"])
@pytest.mark.parametrize("n_temporal,shift_hw", [(1, (0, 0)), (2, (1, 1))])
@pytest.mark.parametrize("globals_mode", ["none", "shared", "separate"])
def test_cross_attention_default_backend_matches_reference(padding_type, n_temporal, shift_hw, globals_mode):
    torch.manual_seed(0)
    layer = CuboidCrossAttentionLayer(
        16, 4, n_temporal, (2, 2), shift_hw, ("l", "l", "l"), padding_type,
        max_temporal_relative=12,
        use_global_vector=globals_mode != "none",
        separate_global_qkv=globals_mode == "separate",
    )  # fmt: skip
    torch.nn.init.normal_(layer.relative_position_bias_table)
    x, mem = torch.randn(2, 5, 6, 5, 16), torch.randn(2, 7, 6, 5, 16)
    mem_globals = torch.randn(2, 3, 16) if globals_mode != "none" else None
    compare_backends(layer, [x, mem, mem_globals])


def test_fully_masked_padded_queries_are_zero():
    # With "ignore" padding a padded query sees no valid key; the official code outputs 0 there.
    layer = CuboidSelfAttentionLayer(8, 2, (2, 2, 2), (0, 0, 0), "lll", "ignore", use_final_proj=False).eval()
    x = torch.randn(1, 3, 2, 2, 8)
    reordered = cuboid_reorder(pad_thw(layer.norm(x), (1, 0, 0), "zeros"), (2, 2, 2), "lll")
    for backend in ("reference", "sdpa"):
        layer.attention_backend = backend
        mask = self_attention_mask((3, 2, 2), (2, 2, 2), (0, 0, 0), ("l",) * 3, "ignore", CPU)
        out, _ = (
            layer._attend_fused(reordered, None, ((3, 2, 2), (2, 2, 2), (0, 0, 0), ("l",) * 3, "ignore", CPU))
            if backend == "sdpa"
            else layer._attend_reference(reordered, None, ((3, 2, 2), (2, 2, 2), (0, 0, 0), ("l",) * 3, "ignore", CPU))
        )
        dead_rows = ~mask.any(-1)
        assert dead_rows.any()
        assert out[0][dead_rows].abs().max() == 0


def test_unknown_backend_and_missing_xformers():
    layer = CuboidSelfAttentionLayer(8, 2)
    try:
        import xformers  # noqa: F401

        pytest.skip("xformers installed")
    except ImportError:
        with pytest.raises(ImportError, match="xformers is not installed"):
            layer.set_use_memory_efficient_attention_xformers(True)
