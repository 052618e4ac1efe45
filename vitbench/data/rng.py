"""Counter-based randomness: pure functions of integer keys, identical on every machine.

Everything the data layer draws (synthetic scene parameters, split permutations, epoch
orders) goes through these, not through ``torch.randperm``/``torch.rand`` with a seeded
generator, so the numbers do not change with the torch version, the device, the batch a
value happens to be computed in, or how many values were drawn before it. That is what
makes "image i of the pool" and "the first N of the permutation" stable facts.
"""

from __future__ import annotations

import hashlib

import torch

M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # odd 32-bit constant: spreads consecutive stream ids apart


def derive_seed(*parts: object) -> int:
    """A 32-bit key from any printable parts (names, seeds, counters), stable across runs.

    ``hash()`` is salted per process for strings, so a cryptographic digest of the repr is used.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & M32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Bijective 32-bit xorshift-multiply mixer on an int64 tensor of values < 2**32.

    The shape of C. Wellons' "lowbias32"/"triple32"; both multipliers are odd and < 2**31, so
    x·c < 2**63 never overflows int64 (no reliance on wrap-around) and ``& M32`` is mod 2**32.
    """
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x31848BAB) & M32
    return x ^ (x >> 16)


def keyed_hash(idx: torch.Tensor, key: int) -> torch.Tensor:
    """Two mixing rounds of ``idx`` under a 32-bit key; a bijection of idx in [0, 2**32)."""
    k1, k2 = key & M32, (key * _GOLDEN + 0x632BE5AB) & M32
    return hash32(hash32(idx.to(torch.int64) ^ k1) ^ k2)


def uniforms(idx: torch.Tensor, key: int, n_streams: int) -> torch.Tensor:
    """(len(idx), n_streams) float32 uniforms in [0, 1), a pure function of (key, idx, stream)."""
    base = keyed_hash(idx, key)  # (N,)
    streams = torch.arange(n_streams, dtype=torch.int64) * _GOLDEN & M32
    h = hash32(hash32((base[:, None] + streams[None, :]) & M32) ^ 0x5BD1E995)
    # 24 high bits are exact in float32
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def permutation(n: int, key: int, first: int | None = None) -> torch.Tensor:
    """A permutation of range(n) (int64): the indices sorted by their keyed hash.

    The hash is a bijection, so there are no ties and the order is fully determined by ``key``.
    ``first=k`` returns only its first k entries (the k smallest keys, in order), via a
    selection instead of a full sort when k is small: a 300-image subset of a 1M pool costs a
    hash pass, not a 1M sort. Same values either way.
    """
    if n > 1 << 32:
        raise ValueError(f"permutation of {n} items exceeds the 32-bit hash space")
    k = n if first is None else min(first, n)
    keys = keyed_hash(torch.arange(n, dtype=torch.int64), key)
    if k < n // 8:
        return torch.topk(keys, k, largest=False, sorted=True).indices
    return torch.argsort(keys, stable=True)[:k]
