"""Seeds of the per-batch random draws (query sampling) from a run's seed, the rank and the batch."""

from __future__ import annotations

MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 finaliser over the parts).

    Neighbouring tuples give unrelated seeds; a linear formula such as ``seed * P + rank * Q + batch``
    would give rank 1 at batch b the draws of rank 0 at batch b + Q.
    """
    state = 0
    for part in parts:
        z = ((state ^ (int(part) & MASK64)) + 0x9E3779B97F4A7C15) & MASK64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & MASK64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & MASK64
        state = z ^ (z >> 31)
    return state >> 1
