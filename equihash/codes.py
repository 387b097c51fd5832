"""Fingerprints (docs/method.md section 7): logits -> packed codes, and Hamming distances between codes.

A fingerprint of k bits is a row of B = k/8 uint8, bit b = (logit_b > 0), packed most
significant bit first (numpy ``packbits`` order): bit 0 is the 0x80 bit of byte 0.
"""

from __future__ import annotations

import numpy as np
import torch

from equihash.io import InputError


def pack_codes(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """(..., k) logits -> (..., k/8) uint8 fingerprints."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().cpu().numpy()
    return np.packbits(logits > 0, axis=-1)


def check_codes(codes, name: str) -> np.ndarray:
    """``codes`` as an (n, B) uint8 array, or InputError naming ``name``."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.dtype != np.uint8 or codes.shape[1] == 0:
        raise InputError(f"{name}: fingerprints must be an (n, B) uint8 array with B >= 1 "
                         f"(got shape {codes.shape}, dtype {codes.dtype})")
    return codes


def hamming_distances(a, b) -> np.ndarray:
    """Hamming distance between corresponding fingerprints: (n, B) uint8 twice -> (n,) int64."""
    a, b = check_codes(a, "hamming_distances a"), check_codes(b, "hamming_distances b")
    if a.shape != b.shape:
        raise InputError(f"hamming_distances: a has shape {a.shape} but b has {b.shape}; expected equal shapes")
    x = np.bitwise_xor(a, b)
    if x.shape[1] % 8 == 0:
        x = np.ascontiguousarray(x).view(np.uint64)  # one popcount per 8 bytes
    return np.bitwise_count(x).sum(axis=1, dtype=np.int64)
