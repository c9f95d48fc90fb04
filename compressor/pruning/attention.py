"""Attention heads. torchvision's attention modules tie the width inside attention
(num_heads × head_dim) to the embedding width, so a whole head cannot be removed from them.
`as_head_attention` swaps one for an equivalent module without that tie; the swap keeps
the parameter names, so a converted model loads the original weights and vice versa.
timm's ViT/DeiT and Swin attention need no swap; Ultralytics' (YOLO11's C2PSA) is swapped like
torchvision's. `drop_heads` then removes heads: rows of the packed q/k/v projection, columns of
the output projection and the head's entries in per-head tables."""

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.swin_transformer import (
    ShiftedWindowAttention,
    ShiftedWindowAttentionV2,
    _get_relative_position_bias,
)

from compressor.errors import CompressorError


def _keep(param: nn.Parameter, keep: torch.Tensor, dim: int) -> nn.Parameter:
    """The parameter restricted to `keep` along `dim`, its gradient too (taylor importance reads it)."""
    kept = nn.Parameter(param.detach().index_select(dim, keep.to(param.device)).clone(), param.requires_grad)
    if param.grad is not None:
        kept.grad = param.grad.index_select(dim, keep.to(param.device)).clone()
    return kept


class Heads:
    """Head surgery on an attention block whose `in_weight`/`in_bias` pack q, k, v as
    [3, heads, head_dim] rows and whose `out_proj` reads [heads, head_dim] columns."""

    num_heads: int
    head_dim: int
    out_proj: nn.Linear

    def packed_rows(self, heads: torch.Tensor) -> torch.Tensor:
        """Row indices of `heads` in the packed q/k/v projection."""
        d, width = self.head_dim, self.num_heads * self.head_dim
        per_head = (heads.view(-1, 1) * d + torch.arange(d)).flatten()
        return torch.cat([block * width + per_head for block in range(3)])

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(heads, n) matrix of each head's weights, and of their gradients when present."""
        def per_head(w_in, w_out):
            if w_in is None:
                return None
            qkv = w_in.reshape(3, self.num_heads, -1).transpose(0, 1).flatten(1)
            out = w_out.reshape(w_out.shape[0], self.num_heads, -1).transpose(0, 1).flatten(1)
            return torch.cat([qkv, out], 1)

        w_in, w_out = self.in_weight, self.out_proj.weight
        grads = per_head(w_in.grad, w_out.grad) if w_in.grad is not None and w_out.grad is not None else None
        return per_head(w_in.detach(), w_out.detach()), grads

    def drop_heads(self, heads: list[int]) -> None:
        kept = torch.tensor([h for h in range(self.num_heads) if h not in set(heads)], dtype=torch.long)
        if len(kept) == 0:
            raise CompressorError(f"cannot remove all {self.num_heads} heads of an attention block")
        rows = self.packed_rows(kept)
        self.set_in_projection(_keep(self.in_weight, rows, 0),
                               None if self.in_bias is None else _keep(self.in_bias, rows, 0))
        columns = (kept.view(-1, 1) * self.head_dim + torch.arange(self.head_dim)).flatten()
        self.out_proj.weight = _keep(self.out_proj.weight, columns, 1)
        self.out_proj.in_features = len(columns)
        self.drop_head_tables(kept)
        self.num_heads = len(kept)

    def drop_head_tables(self, kept: torch.Tensor) -> None:
        """Per-head parameters besides the projections (none by default)."""


class HeadAttention(Heads, nn.Module):
    """An attention module of this package: one of torchvision's, with its inner width free."""


class SelfAttention(HeadAttention):
    """nn.MultiheadAttention (batch_first, no masks, no weights returned) whose inner width is free."""

    @staticmethod
    def accepts(mha: nn.MultiheadAttention) -> bool:
        return mha.batch_first and mha._qkv_same_embed_dim and mha.bias_k is None and not mha.add_zero_attn

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = mha.num_heads, mha.head_dim, mha.dropout
        self.in_proj_weight, self.in_proj_bias, self.out_proj = mha.in_proj_weight, mha.in_proj_bias, mha.out_proj

    in_weight = property(lambda self: self.in_proj_weight)
    in_bias = property(lambda self: self.in_proj_bias)

    def set_in_projection(self, weight, bias):
        self.in_proj_weight, self.in_proj_bias = weight, bias

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise RuntimeError("a head-pruned attention block does not take masks")
        if query is key and key is value:  # self-attention: one matmul for q, k and v
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
            q, k, v = (F.linear(x, w, b) for x, w, b in zip((query, key, value), self.in_proj_weight.chunk(3), biases))
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        # The second output stands for the attention weights, which torchvision's blocks discard.
        return self.out_proj(out.transpose(1, 2).flatten(2)), None


class WindowAttention(HeadAttention):
    """torchvision's ShiftedWindowAttention (Swin v1) whose inner width is free."""

    def __init__(self, swa: ShiftedWindowAttention):
        super().__init__()
        self.window_size, self.shift_size = list(swa.window_size), list(swa.shift_size)
        self.attention_dropout, self.dropout = swa.attention_dropout, swa.dropout
        self.num_heads = swa.num_heads
        self.head_dim = swa.qkv.out_features // 3 // swa.num_heads
        self.qkv, self.proj = swa.qkv, swa.proj
        self.relative_position_bias_table = swa.relative_position_bias_table
        self.register_buffer("relative_position_index", swa.relative_position_index)

    in_weight = property(lambda self: self.qkv.weight)
    in_bias = property(lambda self: self.qkv.bias)
    out_proj = property(lambda self: self.proj)

    def set_in_projection(self, weight, bias):
        self.qkv.weight, self.qkv.bias = weight, bias
        self.qkv.out_features = len(weight)

    def drop_head_tables(self, kept):
        self.relative_position_bias_table = _keep(self.relative_position_bias_table, kept, 1)

    def shift_mask(self, pad_h: int, pad_w: int, shift: list[int], device) -> torch.Tensor:
        """-100 between tokens that the cyclic shift brought into one window from apart."""
        (wh, ww), region = self.window_size, torch.zeros(pad_h, pad_w, device=device)
        count = 0
        for h in ((0, -wh), (-wh, -shift[0]), (-shift[0], None)):
            for w in ((0, -ww), (-ww, -shift[1]), (-shift[1], None)):
                region[h[0]:h[1], w[0]:w[1]] = count
                count += 1
        region = region.view(pad_h // wh, wh, pad_w // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
        different = region.unsqueeze(1) != region.unsqueeze(2)
        return torch.zeros(different.shape, device=device).masked_fill(different, -100.0)

    def forward(self, x):
        batch, height, width, channels = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (-width) % ww, 0, (-height) % wh))
        pad_h, pad_w = x.shape[1], x.shape[2]
        # A window as large as the map needs no shift.
        shift = [s if w < p else 0 for s, w, p in zip(self.shift_size, self.window_size, (pad_h, pad_w))]
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = x.view(batch, pad_h // wh, wh, pad_w // ww, ww, channels).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, wh * ww, channels)
        tokens, heads = windows.shape[1], self.num_heads
        q, k, v = self.qkv(windows).reshape(-1, tokens, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (q * self.head_dim ** -0.5).matmul(k.transpose(-2, -1))
        attn = attn + _get_relative_position_bias(self.relative_position_bias_table, self.relative_position_index,
                                                  self.window_size)
        if any(shift):
            mask = self.shift_mask(pad_h, pad_w, shift, x.device)
            attn = (attn.view(batch, -1, heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, tokens, tokens)
        attn = F.dropout(attn.softmax(dim=-1), p=self.attention_dropout, training=self.training)
        out = attn.matmul(v).transpose(1, 2).reshape(-1, tokens, heads * self.head_dim)
        out = F.dropout(self.proj(out), p=self.dropout, training=self.training)
        out = out.view(batch, pad_h // wh, pad_w // ww, wh, ww, channels).permute(0, 1, 3, 2, 4, 5)
        out = out.reshape(batch, pad_h, pad_w, channels)
        if any(shift):
            out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
        return out[:, :height, :width, :].contiguous()


class TimmHeads(Heads):
    """Head surgery on timm's ViT/DeiT `Attention` and Swin `WindowAttention`, which keep their
    inner width apart from the embedding width already, so they need no swap."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.head_dim = module.proj.in_features // module.num_heads  # fixed while the projections shrink

    @staticmethod
    def accepts(module: nn.Module) -> bool:
        kind = type(module)
        vit = kind.__name__ == "Attention" and hasattr(module, "attn_dim")
        swin = kind.__name__ == "WindowAttention" and hasattr(module, "relative_position_bias_table")
        return kind.__module__.startswith("timm.") and (vit or swin)

    in_weight = property(lambda self: self.module.qkv.weight)
    in_bias = property(lambda self: self.module.qkv.bias)
    out_proj = property(lambda self: self.module.proj)

    @property
    def num_heads(self) -> int:
        return self.module.num_heads

    @num_heads.setter
    def num_heads(self, value: int) -> None:
        self.module.num_heads = value
        if hasattr(self.module, "attn_dim"):
            self.module.attn_dim = value * self.head_dim

    def set_in_projection(self, weight, bias):
        self.module.qkv.weight, self.module.qkv.bias = weight, bias
        self.module.qkv.out_features = len(weight)

    def drop_head_tables(self, kept):
        """ViT's output norm (scale_norm) and output gate (gated) span the inner width too;
        Swin's relative-position-bias table has a column per head."""
        columns = (kept.view(-1, 1) * self.head_dim + torch.arange(self.head_dim)).flatten()
        norm, gate = getattr(self.module, "norm", None), getattr(self.module, "gate", None)
        if getattr(norm, "weight", None) is not None:
            norm.weight = _keep(norm.weight, columns, 0)
            norm.bias = None if norm.bias is None else _keep(norm.bias, columns, 0)
            norm.normalized_shape = (len(columns),)
        if gate is not None:
            gate.weight = _keep(gate.weight, columns, 0)
            gate.bias = None if gate.bias is None else _keep(gate.bias, columns, 0)
            gate.out_features = len(columns)
        table = getattr(self.module, "relative_position_bias_table", None)
        if table is not None:
            self.module.relative_position_bias_table = _keep(table, kept, 1)


def _keep_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    """`bn` restricted to channels `keep`, in place."""
    bn.weight, bn.bias = _keep(bn.weight, keep, 0), _keep(bn.bias, keep, 0)
    bn.running_mean, bn.running_var = bn.running_mean[keep].clone(), bn.running_var[keep].clone()
    bn.num_features = len(keep)


def _keep_conv(block: nn.Module, keep: torch.Tensor, dim: int) -> None:
    """An Ultralytics Conv (conv + BatchNorm) restricted to output (dim 0) or input (dim 1) channels
    `keep`; a depthwise conv loses its groups with its channels."""
    conv = block.conv
    conv.weight = _keep(conv.weight, keep, dim)
    if dim == 0:
        if conv.groups == conv.in_channels and conv.groups > 1:
            conv.groups = conv.in_channels = len(keep)
        conv.out_channels = len(keep)
        _keep_bn(block.bn, keep)
    else:
        conv.in_channels = len(keep)


class ConvAttention(HeadAttention):
    """Ultralytics' Attention (YOLO11's C2PSA, PSA) whose inner width is free: 1×1-conv q/k/v
    projection laid out per head as [q (key_dim), k (key_dim), v (head_dim)], a depthwise
    positional conv on the values, a 1×1-conv output projection. The original views the values
    to its input's width, which ties heads × head_dim to the embedding width."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.num_heads, self.head_dim, self.key_dim = original.num_heads, original.head_dim, original.key_dim
        self.scale = original.scale
        self.qkv, self.proj, self.pe = original.qkv, original.proj, original.pe

    def _rows(self, heads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of `heads` in the q/k/v projection, and their value channels."""
        per_head, d = 2 * self.key_dim + self.head_dim, self.head_dim
        rows = (heads.view(-1, 1) * per_head + torch.arange(per_head)).flatten()
        return rows, (heads.view(-1, 1) * d + torch.arange(d)).flatten()

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        def per_head(qkv, pe, proj):
            if qkv is None or pe is None or proj is None:
                return None
            heads = torch.arange(self.num_heads)
            return torch.stack([torch.cat([qkv[rows].flatten(), pe[values].flatten(), proj[:, values].flatten()])
                                for rows, values in (self._rows(h.view(1)) for h in heads)])

        weights = [self.qkv.conv.weight, self.pe.conv.weight, self.proj.conv.weight]
        return per_head(*(w.detach() for w in weights)), per_head(*(w.grad for w in weights))

    def drop_heads(self, heads: list[int]) -> None:
        kept = torch.tensor([h for h in range(self.num_heads) if h not in set(heads)], dtype=torch.long)
        if len(kept) == 0:
            raise CompressorError(f"cannot remove all {self.num_heads} heads of an attention block")
        rows, values = self._rows(kept)
        _keep_conv(self.qkv, rows, 0)
        _keep_conv(self.pe, values, 0)
        _keep_conv(self.proj, values, 1)
        self.num_heads = len(kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        inner = self.num_heads * self.head_dim
        q, k, v = self.qkv(x).view(batch, self.num_heads, 2 * self.key_dim + self.head_dim, height * width).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        attn = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)
        values = v.reshape(batch, inner, height, width)
        return self.proj((v @ attn.transpose(-2, -1)).view(batch, inner, height, width) + self.pe(values))


# Attention types whose heads can be removed, and the module each becomes. Swin v2 (cosine
# attention, a position MLP per head) is not converted: its MLPs are still pruned.
CONVERTIBLE = {nn.MultiheadAttention: SelfAttention, ShiftedWindowAttention: WindowAttention}
# Modules whose embedding width the dependency graph must treat as one opaque unit: tracing
# into windowed attention makes torch-pruning's index mapping explode.
_OPAQUE = (ShiftedWindowAttention, ShiftedWindowAttentionV2, SelfAttention, WindowAttention)


# timm's attention classes whose heads TimmHeads removes, by module (timm is optional).
_TIMM = {"timm.models.vision_transformer": "Attention", "timm.models.swin_transformer": "WindowAttention"}
# Ultralytics' attention, swapped for ConvAttention, by module (Ultralytics is optional).
_ULTRALYTICS = {"ultralytics.nn.modules.block": "Attention"}


def _imported(table: dict[str, str]) -> tuple[type, ...]:
    """The classes of `table` (module -> class name) whose modules are imported."""
    return tuple(getattr(sys.modules[module], name) for module, name in table.items() if module in sys.modules)


def _conversions() -> dict[type, type]:
    return {**CONVERTIBLE, **{cls: ConvAttention for cls in _imported(_ULTRALYTICS)}}


def opaque_types() -> tuple[type, ...]:
    """The opaque attention types, with timm's and Ultralytics' once their modules are imported."""
    return _OPAQUE + (ConvAttention,) + _imported(_TIMM) + _imported(_ULTRALYTICS)


def attention_types() -> tuple[type, ...]:
    return (nn.MultiheadAttention, *opaque_types())


def _convertible(module: nn.Module) -> bool:
    new = _conversions().get(type(module))
    return new is not None and getattr(new, "accepts", lambda m: True)(module)


def attention_heads(model: nn.Module) -> dict[str, int]:
    """Attention module name -> number of heads, for every block whose heads can be removed."""
    return {name: m.num_heads for name, m in model.named_modules()
            if isinstance(m, HeadAttention) or _convertible(m) or TimmHeads.accepts(m)}


def as_head_attention(model: nn.Module, name: str) -> Heads:
    """The attention block `name` ready for head surgery, swapped in place for its head-prunable
    equivalent where it needs one."""
    module = model.get_submodule(name)
    if isinstance(module, HeadAttention):
        return module
    if TimmHeads.accepts(module):
        return TimmHeads(module)
    if not _convertible(module):
        raise CompressorError(f"'{name}' is a {type(module).__name__}, not an attention block whose heads can be removed")
    parent, _, child = name.rpartition(".")
    converted = _conversions()[type(module)](module)
    setattr(model.get_submodule(parent) if parent else model, child, converted)
    return converted


def drop_heads(model: nn.Module, name: str, heads: list[int]) -> None:
    """Removes `heads` of the attention block `name`, converting it first if needed."""
    as_head_attention(model, name).drop_heads(heads)
