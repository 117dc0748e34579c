"""Attention in the attacker's double backward.

Gradient matching differentiates the model's gradient again (a double backward). The
fused scaled-dot-product-attention kernels (flash, memory-efficient) have no derivative
of their backward, so any transformer fails inside the attack with "derivative for
aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented". The math
kernel computes the same attention from differentiable operations; attacks run under it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

_ATTENTION = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Transformer)

MATH_KERNEL_NOTE = ("attention ran on the math kernel: the fused kernels have no double backward "
                    "(same results, slower)")


def has_attention(model: nn.Module) -> bool:
    """Whether the model holds attention layers (torch's, or a module named like one)."""
    return any(isinstance(m, _ATTENTION) or "attention" in type(m).__name__.lower() for m in model.modules())


def attention_notes(model: nn.Module) -> tuple[str, ...]:
    return (MATH_KERNEL_NOTE,) if has_attention(model) else ()


@contextlib.contextmanager
def math_attention(enabled: bool = True) -> Iterator[None]:
    """Scaled-dot-product attention on the math kernel inside the block (when enabled)."""
    if not enabled:
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


__all__ = ["MATH_KERNEL_NOTE", "attention_notes", "has_attention", "math_attention"]
