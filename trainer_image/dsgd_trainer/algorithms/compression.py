"""Scaled-sign compression of model deltas (Lin et al., Algorithms 3 and 4) and its wire format.

C(x) = (‖x‖₁ / d) · sign(x), per tensor of d elements. On the wire a tensor is
one float32 scale plus one bit per element (1 for +, 0 for −), eight to a byte,
least significant bit first; each tensor's bits start on a byte boundary, so a
tensor of d elements takes ceil(d / 8) bytes. A payload for several tensors is

    [ scale_0 … scale_{n−1} as float32 bytes | bits of tensor 0 | bits of tensor 1 | … ]

of `payload_size(numels)` = 4·n + Σ ceil(d_i / 8) bytes. Scales come first so
they start at offset 0 and can be viewed as float32 without a copy.

Choice: sign(0) = +1. A one-bit code has no zero, so zero elements get +scale;
it only matters for elements that did not move at all, and EF-sign corrects it
at the next sync.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: Weight of bit i within a byte: least significant bit first.
_BIT_WEIGHTS = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)
_SCALE_DTYPE = torch.float32
_SCALE_BYTES = 4


def packed_bits_size(numel: int) -> int:
    """Bytes that `numel` sign bits take: ceil(numel / 8)."""
    return -(-numel // 8)


def payload_size(numels: Sequence[int]) -> int:
    """Bytes of the payload for tensors of these sizes: one float32 scale + packed bits each."""
    return sum(_SCALE_BYTES + packed_bits_size(n) for n in numels)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a 1-D bool tensor into uint8, 8 bits per byte (LSB first), zero-padded at the end."""
    padding = (-bits.numel()) % 8
    if padding:
        bits = torch.cat([bits, bits.new_zeros(padding)])
    weights = _BIT_WEIGHTS.to(bits.device)
    return (bits.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of pack_bits: the first `numel` bits of `packed` as a 1-D bool tensor."""
    weights = _BIT_WEIGHTS.to(packed.device)
    return packed.unsqueeze(1).bitwise_and(weights).ne(0).view(-1)[:numel]


def sign_bits(tensor: torch.Tensor) -> torch.Tensor:
    """sign(x) as bits: True for x ≥ 0 (sign(0) = +1, see the module doc), flattened."""
    return tensor.detach().reshape(-1).ge(0)


def sign_scale(tensor: torch.Tensor) -> torch.Tensor:
    """‖x‖₁ / d as a float32 scalar (0 for an empty tensor)."""
    if tensor.numel() == 0:
        return torch.zeros((), dtype=_SCALE_DTYPE, device=tensor.device)
    return tensor.detach().abs().sum(dtype=_SCALE_DTYPE) / tensor.numel()


def _decode(bits: torch.Tensor, scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    scale = scale.to(like.dtype)
    return torch.where(bits, scale, -scale).view_as(like)


def scaled_sign(tensor: torch.Tensor) -> torch.Tensor:
    """C(x) = (‖x‖₁ / d) · sign(x), exactly as a receiver decodes it."""
    return _decode(sign_bits(tensor), sign_scale(tensor), tensor)


def error_feedback_step(
    delta: torch.Tensor, error: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EF-sign step: p = Δ + e, c = C(p), e_new = p − c. Returns (p, c, e_new)."""
    corrected = delta + error
    compressed = scaled_sign(corrected)
    return corrected, compressed, corrected - compressed


def encode(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The uint8 payload carrying C(t) for each tensor (format in the module doc)."""
    if not tensors:
        raise ValueError("nothing to compress")
    scales = torch.stack([sign_scale(t) for t in tensors])
    bits = [pack_bits(sign_bits(t)) for t in tensors]
    return torch.cat([scales.view(torch.uint8), *bits])


def decode(payload: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Decompress a payload from `encode` into tensors shaped (and typed) like `like`."""
    expected = payload_size([t.numel() for t in like])
    if payload.numel() != expected:
        raise ValueError(f"payload has {payload.numel()} bytes, expected {expected}")
    scale_bytes = _SCALE_BYTES * len(like)
    scales = payload[:scale_bytes].view(_SCALE_DTYPE)
    decoded, offset = [], scale_bytes
    for index, tensor in enumerate(like):
        size = packed_bits_size(tensor.numel())
        bits = unpack_bits(payload[offset : offset + size], tensor.numel())
        decoded.append(_decode(bits, scales[index], tensor))
        offset += size
    return decoded
