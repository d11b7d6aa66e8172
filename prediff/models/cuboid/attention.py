"""Cuboid self- and cross-attention layers with global vectors, and their attention backends.

Backends compute the same function, the official cuboid attention:

* ``"reference"`` - the official algorithm as written: explicit scores, relative bias, a mask tensor even when
  nothing is masked, ``masked_fill`` + softmax + multiplication by the mask. It is the ground truth in tests.
* ``"sdpa"`` (default) - :func:`torch.nn.functional.scaled_dot_product_attention` with the relative bias and
  the masks merged into one additive bias per shape; global keys are concatenated to each cuboid's keys so one
  call computes the joint softmax.
* ``"xformers"`` - ``xformers.ops.memory_efficient_attention`` on the same inputs (CUDA, optional extra).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .decomposition import (
    Size3,
    Strategy,
    check_padding_type,
    check_strategy,
    cross_attention_mask,
    cuboid_reorder,
    cuboid_reorder_reverse,
    effective_cuboid_and_shift,
    global_key_mask,
    pad_thw,
    padding_amounts,
    relative_position_index,
    self_attention_mask,
    unpad_thw,
)

ATTENTION_BACKENDS = ("sdpa", "reference", "xformers")


def _masked_value(dtype: torch.dtype) -> float:
    # The official code fills masked scores with -1e4 in float16 and -1e18 otherwise; any finite value far below
    # the scores makes exp() exactly 0, and finite keeps fully masked rows free of NaN.
    return -1e4 if dtype == torch.float16 else -1e18


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last axis where masked entries get 0 weight; a fully masked row gives all zeros."""
    if mask is None:
        return torch.softmax(scores, dim=-1)
    scores = scores.masked_fill(~mask, _masked_value(scores.dtype))
    return torch.softmax(scores, dim=-1) * mask


def check_attention_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`ATTENTION_BACKENDS` usable here, else a ``ValueError`` / ``ImportError``."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if backend == "xformers":
        require_xformers()
    return backend


def require_xformers() -> None:
    """Raise a clear error when xformers' memory-efficient attention cannot be used here."""
    try:
        import xformers.ops  # noqa: F401
    except ImportError as error:
        raise ImportError(
            'xformers is not installed: `pip install "prediff[xformers]"` (it needs a CUDA build of PyTorch), '
            "or keep the default 'sdpa' attention backend"
        ) from error
    if not torch.cuda.is_available():
        raise ValueError("xformers memory-efficient attention needs a CUDA device; none is available")


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    dropout_p: float,
    backend: str,
) -> torch.Tensor:
    """``softmax(q k^T + bias) v`` with ``q`` already scaled.

    Shapes: ``q (B, heads, [N,] L, E)``, ``k (B, heads, [N,] S, E)``, ``v (B, heads, [N,] S, Ev)``; ``bias``
    broadcasts to ``(heads, N, L, S)`` (or to ``(L, S)`` without cuboids) and already holds the masks as large
    negative values. Cuboids are folded into the batch, so the kernels see 4-D views of the projections, not copies.
    """
    if q.ndim == 5:
        B, heads, N, L, _ = q.shape

        def fold(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).reshape(B * N, heads, t.shape[-2], t.shape[-1])

        if bias is not None:
            bias = bias.expand(heads, -1, L, k.shape[-2]).transpose(0, 1)
            if bias.shape[0] != 1:
                bias = bias.repeat(B, 1, 1, 1)
        out = _attention_4d(fold(q), fold(k), fold(v), bias, dropout_p, backend)
        return out.reshape(B, N, heads, L, -1).transpose(1, 2)
    return _attention_4d(q, k, v, bias, dropout_p, backend)


def _attention_4d(q, k, v, bias, dropout_p, backend):
    if bias is not None:
        bias = bias.to(q.dtype)
    if backend == "xformers":
        import xformers.ops as xops

        if bias is not None:
            bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2]).contiguous()
        out = xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, p=dropout_p, scale=1.0
        )
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=1.0)


def _additive_bias(bias: torch.Tensor | None, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The relative bias ``(heads, 1, L, S)`` and the boolean mask ``(N, L, S)`` (True = may attend) as one additive
    bias of ``dtype``: masked pairs get a large negative value. ``None`` when there is neither."""
    if bias is not None:
        bias = bias.to(dtype)
    if mask is None:
        return bias
    masked = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, _masked_value(dtype))
    return masked if bias is None else bias + masked


def _reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    global_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    dropout: nn.Module,
) -> torch.Tensor:
    """The official computation of attention inside cuboids: explicit scores, the relative bias, an explicit mask
    (all True when ``mask`` is None), masked softmax, dropout. ``(B, heads, N, L, E)`` queries, ``(B, heads, N, S, E)``
    keys, ``(B, heads, N, S, Ev)`` values -> ``(B, heads, N, L, Ev)``.

    ``global_qkv = (q_g, k_g, v_g)`` with ``k_g (B, heads, 1, P, E)`` and ``v_g (B, heads, 1, P, Ev)`` adds ``P``
    global keys to every cuboid's keys, scored with the queries ``q_g`` (``q`` itself or separate ones), in the same
    softmax.
    """
    N, L, S = q.shape[2], q.shape[3], k.shape[3]
    if mask is None:
        mask = torch.ones((N, L, S), dtype=torch.bool, device=q.device)
    scores = q @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    if global_qkv is not None:
        global_q, global_k, global_v = global_qkv
        scores = torch.cat((scores, global_q @ global_k.transpose(-2, -1)), dim=-1)
        mask = F.pad(mask, (0, global_k.shape[-2]), value=True)
        v = torch.cat((v, global_v.expand(-1, -1, N, -1, -1)), dim=3)
    return dropout(masked_softmax(scores, mask)) @ v


def _fused_cuboid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    global_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    dtype: torch.dtype,
    dropout_p: float,
    backend: str,
) -> torch.Tensor:
    """What :func:`_reference_attention` computes, with one fused kernel (:func:`fused_attention`): the relative
    bias and the mask become one additive bias of ``dtype``, and the global keys are concatenated to every cuboid's
    keys so one call computes the joint softmax. Shapes as in :func:`_reference_attention`."""
    bias = _additive_bias(bias, mask, dtype)
    if global_qkv is not None:
        global_q, global_k, global_v = global_qkv
        N, S, P = q.shape[2], k.shape[3], global_k.shape[-2]
        if global_q is not q:
            # Different queries for local and global keys: stacking them along the feature axis against
            # zero-padded keys gives q_l.k_l on local keys and q_g.k_g on global keys in one product.
            E = q.shape[-1]
            q = torch.cat((q, global_q), dim=-1)
            k, global_k = F.pad(k, (0, E)), F.pad(global_k, (E, 0))
        k = torch.cat((k, global_k.expand(-1, -1, N, -1, -1)), dim=3)
        v = torch.cat((v, global_v.expand(-1, -1, N, -1, -1)), dim=3)
        if bias is None:
            bias = torch.zeros((1, 1, q.shape[3], S), dtype=dtype, device=q.device)
        bias = F.pad(bias, (0, P))
    out = fused_attention(q, k, v, bias, dropout_p, backend)
    if mask is not None:
        # Rows whose keys are all masked (padded queries under "ignore") are 0 in the official code.
        out = out * mask.any(-1).to(out.dtype)[None, None, :, :, None]
    return out


class CuboidAttentionBase(nn.Module):
    """What the self- and cross-attention layers share: the checks of their common arguments, the head split and
    query scaling, the relative-position bias table, and the attention backend. Not used on its own.

    Args:
        dim (`int`): channels ``C``.
        num_heads (`int`): attention heads; must divide ``dim``.
        strategy (`tuple[str, str, str]`): "l" (local) or "d" (dilated) per axis (T, H, W).
        padding_type (`str`): "ignore", "zeros" or "nearest".
        qk_scale (`float`, *optional*): query scaling; default ``head_dim ** -0.5``.
        attn_drop (`float`): dropout on the attention weights.
        use_global_vector (`bool`): the layer exchanges information with global vectors.
        separate_global_qkv (`bool`): separate projections for the global paths (needed when the ratio is not 1).
        global_dim_ratio (`int`): width of the global vectors as a multiple of ``dim``.
        use_relative_pos (`bool`): a learned bias per head and relative offset inside ``relative_extent``.
        relative_extent (`tuple[int, int, int]`): the largest (T, H, W) extent of query-key offsets; the table has
            ``(2T-1)(2H-1)(2W-1)`` rows, one per offset, as in the official checkpoints.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        strategy: Strategy,
        padding_type: str,
        qk_scale: float | None,
        attn_drop: float,
        use_global_vector: bool,
        separate_global_qkv: bool,
        global_dim_ratio: int,
        use_relative_pos: bool,
        relative_extent: Size3,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be a multiple of num_heads={num_heads}")
        if global_dim_ratio != 1 and not separate_global_qkv:
            raise ValueError(f"global_dim_ratio={global_dim_ratio} != 1 needs separate_global_qkv=True")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.strategy = check_strategy(strategy)
        self.padding_type = check_padding_type(padding_type)
        self.scale = qk_scale or self.head_dim**-0.5
        self.use_global_vector = use_global_vector
        self.separate_global_qkv = separate_global_qkv
        self.global_dim_ratio = global_dim_ratio
        self.use_relative_pos = use_relative_pos
        self.attn_drop = attn_drop
        self.attention_backend = "sdpa"
        if use_relative_pos:
            eT, eH, eW = relative_extent
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * eT - 1) * (2 * eH - 1) * (2 * eW - 1), num_heads)
            )
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.register_buffer("relative_position_index", relative_position_index(tuple(relative_extent)))

    def set_use_memory_efficient_attention_xformers(self, valid: bool, attention_op: Callable | None = None) -> None:
        self.attention_backend = check_attention_backend("xformers" if valid else "sdpa")

    def _relative_bias(self, num_queries: int, num_keys: int) -> torch.Tensor | None:
        """``(heads, 1, L, S)`` bias of the first ``L`` query and ``S`` key places, ``None`` without relative
        positions; a shrunk cuboid reuses the top-left block of the index, as the official code does."""
        if not self.use_relative_pos:
            return None
        index = self.relative_position_index[:num_queries, :num_keys].reshape(-1)
        table = self.relative_position_bias_table[index]
        return table.reshape(num_queries, num_keys, -1).permute(2, 0, 1).unsqueeze(1)


class CuboidSelfAttentionLayer(CuboidAttentionBase):
    """Self attention inside the cuboids of a ``(B, T, H, W, C)`` tensor, optionally with global vectors.

    Pre-norm is inside the layer; the residual add is done by the caller. Module names and parameter shapes
    match the official Earthformer checkpoints.

    Args:
        dim (`int`): channels ``C``.
        num_heads (`int`): attention heads; must divide ``dim``.
        cuboid_size (`tuple[int, int, int]`): cuboid extent over (T, H, W); shrunk on axes that are shorter.
        shift_size (`tuple[int, int, int]`): Swin-style shift per axis (ignored on dilated axes).
        strategy (`tuple[str, str, str]`): "l" (local) or "d" (dilated) per axis.
        padding_type (`str`): "ignore", "zeros" or "nearest".
        use_global_vector (`bool`): exchange information with ``P`` global vectors.
        use_global_self_attn (`bool`): global vectors also attend to each other.
        separate_global_qkv (`bool`): separate projections for the global paths (needed when the ratio is not 1).
        global_dim_ratio (`int`): width of the global vectors as a multiple of ``dim``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        cuboid_size: Size3 = (2, 7, 7),
        shift_size: Size3 = (0, 0, 0),
        strategy: Strategy = ("l", "l", "l"),
        padding_type: str = "ignore",
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        use_final_proj: bool = True,
        use_global_vector: bool = False,
        use_global_self_attn: bool = False,
        separate_global_qkv: bool = False,
        global_dim_ratio: int = 1,
        use_relative_pos: bool = True,
    ):
        super().__init__(
            dim,
            num_heads,
            strategy,
            padding_type,
            qk_scale,
            attn_drop,
            use_global_vector,
            separate_global_qkv,
            global_dim_ratio,
            use_relative_pos,
            relative_extent=tuple(cuboid_size),
        )
        self.cuboid_size = tuple(cuboid_size)
        self.shift_size = tuple(shift_size)
        self.use_final_proj = use_final_proj
        self.use_global_self_attn = use_global_self_attn
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_dropout = nn.Dropout(attn_drop)
        if use_final_proj:
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)
            if use_global_vector:
                self.global_proj = nn.Linear(global_dim_ratio * dim, global_dim_ratio * dim)
        if use_global_vector:
            global_dim = global_dim_ratio * dim
            if separate_global_qkv:
                self.l2g_q_net = nn.Linear(dim, dim, bias=qkv_bias)
                self.l2g_global_kv_net = nn.Linear(global_dim, dim * 2, bias=qkv_bias)
                self.g2l_global_q_net = nn.Linear(global_dim, dim, bias=qkv_bias)
                self.g2l_k_net = nn.Linear(dim, dim, bias=qkv_bias)
                self.g2l_v_net = nn.Linear(dim, global_dim, bias=qkv_bias)
                if use_global_self_attn:
                    self.g2g_global_qkv_net = nn.Linear(global_dim, global_dim * 3, bias=qkv_bias)
            else:
                self.global_qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.global_vec_norm = nn.LayerNorm(global_dim)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, global_vectors: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x: (B, T, H, W, C)``, ``global_vectors: (B, P, g*C)`` -> ``(x_out, global_out)`` of the same shapes."""
        x = self.norm(x)
        B, T, H, W, C = x.shape
        if self.use_global_vector:
            if global_vectors is None:
                raise ValueError("this layer uses global vectors: pass global_vectors of shape (B, P, g*C)")
            global_vectors = self.global_vec_norm(global_vectors)
        cuboid_size, shift_size = effective_cuboid_and_shift(
            (T, H, W), self.cuboid_size, self.shift_size, self.strategy
        )
        pad = padding_amounts((T, H, W), cuboid_size)
        padded_shape = (T + pad[0], H + pad[1], W + pad[2])
        x = pad_thw(x, pad, self.padding_type)
        shifted = any(s > 0 for s in shift_size)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift_size), dims=(1, 2, 3))
        x = cuboid_reorder(x, cuboid_size, self.strategy)
        mask_args = ((T, H, W), cuboid_size, shift_size, self.strategy, self.padding_type, x.device)
        if self.attention_backend == "reference":
            out, new_global = self._attend_reference(x, global_vectors, mask_args)
        else:
            out, new_global = self._attend_fused(x, global_vectors, mask_args)
        if self.use_final_proj:
            out = self.proj_drop(self.proj(out))
            if new_global is not None:
                new_global = self.proj_drop(self.global_proj(new_global))
        out = cuboid_reorder_reverse(out, cuboid_size, self.strategy, padded_shape)
        if shifted:
            out = torch.roll(out, shifts=shift_size, dims=(1, 2, 3))
        return unpad_thw(out, pad, self.padding_type), new_global

    def _project(self, x: torch.Tensor, global_vectors: torch.Tensor | None):
        """Queries, keys and values of the local and global paths, heads split, queries scaled."""
        B, N, V, C = x.shape
        heads, hd = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).reshape(B, N, V, 3, heads, hd).permute(3, 0, 4, 1, 2, 5)
        q = q * self.scale
        if not self.use_global_vector:
            return {"q": q, "k": k, "v": v}
        P = global_vectors.shape[1]
        ghd = self.global_dim_ratio * hd
        if self.separate_global_qkv:
            l2g_q = self.l2g_q_net(x).reshape(B, N, V, heads, hd).permute(0, 3, 1, 2, 4) * self.scale
            l2g_k, l2g_v = self.l2g_global_kv_net(global_vectors).reshape(B, P, 2, heads, hd).permute(2, 0, 3, 1, 4)
            g2l_q = self.g2l_global_q_net(global_vectors).reshape(B, P, heads, hd).permute(0, 2, 1, 3) * self.scale
            g2l_k = self.g2l_k_net(x).reshape(B, N, V, heads, hd).permute(0, 3, 1, 2, 4)
            g2l_v = self.g2l_v_net(x).reshape(B, N, V, heads, ghd).permute(0, 3, 1, 2, 4)
            g2g = None
            if self.use_global_self_attn:
                g2g_q, g2g_k, g2g_v = (
                    self.g2g_global_qkv_net(global_vectors).reshape(B, P, 3, heads, ghd).permute(2, 0, 3, 1, 4)
                )
                g2g = (g2g_q * self.scale, g2g_k, g2g_v)
        else:
            gq, gk, gv = self.global_qkv(global_vectors).reshape(B, P, 3, heads, hd).permute(2, 0, 3, 1, 4)
            gq = gq * self.scale
            l2g_q, l2g_k, l2g_v = q, gk, gv
            g2l_q, g2l_k, g2l_v = gq, k, v
            g2g = (gq, gk, gv) if self.use_global_self_attn else None
        return {
            "q": q, "k": k, "v": v, "l2g_q": l2g_q, "l2g_k": l2g_k, "l2g_v": l2g_v,
            "g2l_q": g2l_q, "g2l_k": g2l_k, "g2l_v": g2l_v, "g2g": g2g,
        }  # fmt: skip

    @staticmethod
    def _local_global_qkv(p: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(queries, keys, values)`` of the local-to-global path: the queries of every cuboid also attend to the
        ``P`` global vectors, whose keys ``(B, heads, 1, P, E)`` and values get a cuboid axis of size 1."""
        return p["l2g_q"], p["l2g_k"].unsqueeze(2), p["l2g_v"].unsqueeze(2)

    def _attend_reference(self, x, global_vectors, mask_args):
        """The official computation: explicit scores and an explicit mask tensor."""
        B, N, V, C = x.shape
        p = self._project(x, global_vectors)
        mask = self_attention_mask(*mask_args)
        global_qkv = self._local_global_qkv(p) if self.use_global_vector else None
        out = _reference_attention(
            p["q"], p["k"], p["v"], self._relative_bias(V, V), mask, global_qkv, self.attn_dropout
        )
        out = out.permute(0, 2, 3, 1, 4).reshape(B, N, V, C)
        if not self.use_global_vector:
            return out, None
        P = global_vectors.shape[1]
        heads = self.num_heads
        g2l_k = p["g2l_k"].reshape(B, heads, N * V, -1)
        g2l_v = p["g2l_v"].reshape(B, heads, N * V, -1)
        g_scores = p["g2l_q"] @ g2l_k.transpose(-2, -1)
        g_mask = global_key_mask(*mask_args)
        if p["g2g"] is not None:
            g2g_q, g2g_k, g2g_v = p["g2g"]
            g_scores = torch.cat((g_scores, g2g_q @ g2g_k.transpose(-2, -1)), dim=-1)
            g2l_v = torch.cat((g2l_v, g2g_v), dim=2)
            if g_mask is not None:
                g_mask = F.pad(g_mask, (0, P), value=True)
        g_attn = self.attn_dropout(masked_softmax(g_scores, g_mask))
        new_global = (g_attn @ g2l_v).permute(0, 2, 1, 3).reshape(B, P, -1)
        return out, new_global

    def _attend_fused(self, x, global_vectors, mask_args):
        B, N, V, C = x.shape
        dropout_p = self.attn_drop if self.training else 0.0
        p = self._project(x, global_vectors)
        mask = self_attention_mask(*mask_args)
        global_qkv = self._local_global_qkv(p) if self.use_global_vector else None
        out = _fused_cuboid_attention(
            p["q"], p["k"], p["v"], self._relative_bias(V, V), mask, global_qkv, x.dtype, dropout_p,
            self.attention_backend,
        )  # fmt: skip
        out = out.permute(0, 2, 3, 1, 4).reshape(B, N, V, C)
        if not self.use_global_vector:
            return out, None
        return out, self._attend_global_fused(p, B, N, V, dropout_p, mask_args)

    def _attend_global_fused(self, p, B, N, V, dropout_p, mask_args):
        heads = self.num_heads
        g2l_k = p["g2l_k"].reshape(B, heads, N * V, -1)
        g2l_v = p["g2l_v"].reshape(B, heads, N * V, -1)
        q = p["g2l_q"]
        P = q.shape[2]
        key_mask = global_key_mask(*mask_args)
        k, v = g2l_k, g2l_v
        if p["g2g"] is not None:
            g2g_q, g2g_k, g2g_v = p["g2g"]
            v = torch.cat((g2l_v, g2g_v), dim=2)
            if g2g_q is not q:
                # Joint softmax over local keys (g2l query) and global keys (g2g query): see _fused_cuboid_attention.
                q = torch.cat((q, g2g_q), dim=-1)
                g2l_k, g2g_k = F.pad(g2l_k, (0, g2g_k.shape[-1])), F.pad(g2g_k, (g2l_k.shape[-1], 0))
            k = torch.cat((g2l_k, g2g_k), dim=2)
            if key_mask is not None:
                key_mask = F.pad(key_mask, (0, P), value=True)
        bias = None if key_mask is None else _additive_bias(None, key_mask[None], q.dtype)
        out = fused_attention(q, k, v, bias, dropout_p, self.attention_backend)
        return out.permute(0, 2, 1, 3).reshape(B, P, -1)


class CuboidCrossAttentionLayer(CuboidAttentionBase):
    """Decoder queries ``x`` attend to encoder memory inside spatial cuboids (Earthformer's decoder).

    Each spatial cuboid ``(h, w)`` is split in time into ``n_temporal`` groups; the memory is padded on the left
    in time and the queries on the right. Module names and shapes match the official checkpoints.

    Args:
        dim (`int`): channels of queries and memory.
        num_heads (`int`): attention heads.
        n_temporal (`int`): temporal groups.
        cuboid_hw (`tuple[int, int]`): spatial cuboid.
        shift_hw (`tuple[int, int]`): spatial shift (ignored on dilated axes).
        strategy (`tuple[str, str, str]`): "l"/"d" per (T, H, W).
        max_temporal_relative (`int`): extent of the temporal relative-position table (``T_in + T_out``).
        cross_last_n_frames (`int`, *optional*): only the last frames of the memory are attended.
        use_global_vector (`bool`): queries also attend to the memory's global vectors.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_temporal: int = 1,
        cuboid_hw: tuple[int, int] = (7, 7),
        shift_hw: tuple[int, int] = (0, 0),
        strategy: Strategy = ("d", "l", "l"),
        padding_type: str = "ignore",
        cross_last_n_frames: int | None = None,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        max_temporal_relative: int = 50,
        use_global_vector: bool = True,
        separate_global_qkv: bool = False,
        global_dim_ratio: int = 1,
        use_relative_pos: bool = True,
    ):
        super().__init__(
            dim,
            num_heads,
            strategy,
            padding_type,
            qk_scale,
            attn_drop,
            use_global_vector,
            separate_global_qkv,
            global_dim_ratio,
            use_relative_pos,
            relative_extent=(max_temporal_relative, *cuboid_hw),
        )
        self.n_temporal = n_temporal
        self.cuboid_hw = tuple(cuboid_hw)
        self.shift_hw = tuple(0 if self.strategy[i + 1] == "d" else s for i, s in enumerate(shift_hw))
        self.max_temporal_relative = max_temporal_relative
        self.cross_last_n_frames = cross_last_n_frames
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv_proj = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_dropout = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if use_global_vector and separate_global_qkv:
            self.l2g_q_net = nn.Linear(dim, dim, bias=qkv_bias)
            self.l2g_global_kv_net = nn.Linear(global_dim_ratio * dim, dim * 2, bias=qkv_bias)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, mem: torch.Tensor, mem_global_vectors: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x: (B, T_x, H, W, C)``, ``mem: (B, T_mem, H, W, C)``, globals ``(B, P, g*C)`` -> ``(B, T_x, H, W, C)``."""
        if self.cross_last_n_frames is not None:
            mem = mem[:, -min(self.cross_last_n_frames, mem.shape[1]) :]
        x = self.norm(x)
        B, T_x, H, W, C = x.shape
        T_mem = mem.shape[1]
        if mem.shape[0] != B or mem.shape[2:] != x.shape[2:]:
            raise ValueError(f"memory {tuple(mem.shape)} does not match queries {tuple(x.shape)} in B, H, W or C")
        if max(T_x, T_mem) >= self.max_temporal_relative:
            raise ValueError(
                f"time lengths {T_x} (queries) and {T_mem} (memory) must be below max_temporal_relative="
                f"{self.max_temporal_relative}"
            )
        n_t, cuboid_hw, shift_hw = self.n_temporal, self.cuboid_hw, self.shift_hw
        pad_t_mem = (n_t - T_mem % n_t) % n_t
        pad_t_x = (n_t - T_x % n_t) % n_t
        pad_h, pad_w = padding_amounts((H, W, 1), (*cuboid_hw, 1))[:2]
        mem = pad_thw(mem, (pad_t_mem, pad_h, pad_w), self.padding_type, t_pad_left=True)
        x = pad_thw(x, (pad_t_x, pad_h, pad_w), self.padding_type)
        shifted = any(s > 0 for s in shift_hw)
        if shifted:
            x = torch.roll(x, shifts=(-shift_hw[0], -shift_hw[1]), dims=(2, 3))
            mem = torch.roll(mem, shifts=(-shift_hw[0], -shift_hw[1]), dims=(2, 3))
        x_shape = tuple(x.shape[1:4])
        x_cuboid = (x.shape[1] // n_t, *cuboid_hw)
        mem_cuboid = (mem.shape[1] // n_t, *cuboid_hw)
        x = cuboid_reorder(x, x_cuboid, self.strategy)
        mem = cuboid_reorder(mem, mem_cuboid, self.strategy)
        N, Vx, Vm = x.shape[1], x.shape[2], mem.shape[2]
        mask = cross_attention_mask(
            T_x, T_mem, (H, W), n_t, cuboid_hw, shift_hw, self.strategy, self.padding_type, x.device
        )
        heads, hd = self.num_heads, self.head_dim
        k, v = self.kv_proj(mem).reshape(B, N, Vm, 2, heads, hd).permute(3, 0, 4, 1, 2, 5)
        q = self.q_proj(x).reshape(B, N, Vx, heads, hd).permute(0, 3, 1, 2, 4) * self.scale
        bias = self._relative_bias(Vx, Vm)
        global_qkv = None
        if self.use_global_vector:
            if mem_global_vectors is None:
                raise ValueError("this layer uses global vectors: pass mem_global_vectors of shape (B, P, g*C)")
            P = mem_global_vectors.shape[1]
            if self.separate_global_qkv:
                l2g_q = self.l2g_q_net(x).reshape(B, N, Vx, heads, hd).permute(0, 3, 1, 2, 4) * self.scale
                gk, gv = self.l2g_global_kv_net(mem_global_vectors).reshape(B, P, 2, heads, hd).permute(2, 0, 3, 1, 4)
            else:
                l2g_q = q
                gk, gv = self.kv_proj(mem_global_vectors).reshape(B, P, 2, heads, hd).permute(2, 0, 3, 1, 4)
            global_qkv = (l2g_q, gk.unsqueeze(2), gv.unsqueeze(2))
        if self.attention_backend == "reference":
            out = _reference_attention(q, k, v, bias, mask, global_qkv, self.attn_dropout)
        else:
            dropout_p = self.attn_drop if self.training else 0.0
            out = _fused_cuboid_attention(q, k, v, bias, mask, global_qkv, q.dtype, dropout_p, self.attention_backend)
        out = out.permute(0, 2, 3, 1, 4).reshape(B, N, Vx, C)
        out = self.proj_drop(self.proj(out))
        out = cuboid_reorder_reverse(out, x_cuboid, self.strategy, x_shape)
        if shifted:
            out = torch.roll(out, shifts=shift_hw, dims=(2, 3))
        return unpad_thw(out, (pad_t_x, pad_h, pad_w), self.padding_type)
