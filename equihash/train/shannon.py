"""The Shannon term of the ShannonHamming objective (docs/method.md section 6.1).

The Shannon term maximises, over every *bit tuple* ``T`` (every ``tuple_size``-subset of
the ``k`` bits), the entropy of the batch-average distribution of T's bits::

    P_j(b = 1) = sigmoid(z_jb)                      (instance j, bit b)
    p_T(c)     = 1/N sum_j prod_{b in T} P_j(b = c_b)
    H_T        = -sum_c p_T(c) log p_T(c)           (nats)

over the ``N = 2n`` instances of one optimiser step. Its exact gradient with respect to
the logit ``z_ji``: for every tuple ``T`` containing ``i`` write ``S = T \\ {i}`` (a
*sub-tuple* of ``tuple_size - 1`` bits, with configurations ``c_S``) and::

    A1[i,S,c_S] = sum_j P_j(i=1) P_j(S=c_S)     A0[i,S,c_S] = sum_j P_j(i=0) P_j(S=c_S)
    l[i,S,c_S]  = log A1[i,S,c_S] - log A0[i,S,c_S]
    d(-sum_T H_T)/dz_ji = sigmoid'(z_ji) / N
                          * sum_{S not containing i} sum_{c_S} P_j(S=c_S) l[i,S,c_S]

(``p_T(1, c_S) = A1/N`` and ``p_T(0, c_S) = A0/N``; the ``1/N`` cancels in ``l``.)

Both sums are contractions over a matrix ``Q[j, (S, c_S)] = P_j(S = c_S)`` of shape
``(N, nS * 2**(tuple_size-1))``, one column per sub-tuple configuration::

    [A1; A0] = [P1 P0]^T @ Q             (2k, columns)
    grad     = sigmoid'(z) / N * (Q @ L^T),   L = l with the entries where i in S zeroed

so the whole gradient is two matrix products; no Python loop runs over tuples. The
columns are processed in chunks of sub-tuples, which bounds memory (a few chunks of
``Q`` at a time, whatever k and tuple_size) and keeps each chunk in cache.

The *pseudo-smooth* variant computes ``l`` from the hard codes ``z > 0`` instead: the
full-tuple configuration counts with a prior, ``p = (count + prior) / (N + prior * 2**t)``,
so ``l = log(count(i=1, c_S) + prior) - log(count(i=0, c_S) + prior)``; the soft factor
``P_j(S = c_S)`` and ``sigmoid'(z_ji)`` are kept.

*Tuple cover* (the ablation of the thesis, section 6.5): instead of all ``C(k, t)`` tuples
the Shannon term may sum over a random family of tuples (:func:`tuple_family`) that covers
every bit, every pair or every triple of bits (``cover_size`` 1, 2, 3). The contraction then runs over the sub-tuples ``S`` that
occur in the family only, and ``L[i, S]`` is zeroed unless ``S + {i}`` is a tuple of the
family (the same mask that removes ``i in S`` for all tuples); the entropy is summed over
the family's tuples.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from equihash.train.evaluation import covering_family

GRADIENTS = ("normal", "pseudo-smooth")

#: Elements of one chunk of ``Q`` (instances x sub-tuple configurations): 2**21 float32
#: elements = 8 MiB, which stays in cache. Measured on a 2-core AMD EPYC for k=64,
#: tuple_size=3, N=4096 (one thread, CPU seconds per call): 0.25 s for chunks of
#: 2**19..2**21 elements, 0.31 s for one 2**25-element chunk (the whole Q, 128 MiB).
DEFAULT_CHUNK_ELEMENTS = 1 << 21


@functools.lru_cache(maxsize=32)
def _subsets(k: int, size: int) -> Tensor:
    """All ``size``-subsets of ``range(k)`` as rows of ascending bit indices, in
    lexicographic order: int64 tensor ``(C(k, size), size)`` (shared; never mutate)."""
    return torch.combinations(torch.arange(k), r=size).reshape(-1, size)


def _configuration_probabilities(bit_probabilities: Tensor, subsets: Tensor) -> Tensor:
    """``P_j(S = c)`` for every subset ``S`` (a row of ``subsets``), configuration ``c`` of
    S's bits and instance ``j``, as a matrix ``(len(subsets) * 2**|S|, N)``: the transpose
    of ``Q``, one row per column of ``Q``, contiguous along the instances (measured about
    3x faster to build than the instance-major layout).

    ``bit_probabilities`` is ``(k, 2, N)`` with ``[b, 0, j] = P_j(b=0)`` and
    ``[b, 1, j] = P_j(b=1)`` (hard codes give one-hot configuration indicators). Row
    ``s * 2**|S| + c`` holds subset ``s`` and configuration ``c = sum_m c_m 2**(|S|-1-m)``:
    the smallest bit of S is the most significant bit of ``c``. The loop runs over the
    positions inside one subset (``|S|`` of them), never over subsets.
    """
    n_subsets, size = subsets.shape
    n_instances = bit_probabilities.shape[-1]
    q = bit_probabilities[subsets[:, 0]]  # (n_subsets, 2, N)
    for m in range(1, size):
        factor = bit_probabilities[subsets[:, m]]
        q = (q[:, :, None, :] * factor[:, None, :, :]).reshape(n_subsets, -1, n_instances)
    return q.reshape(-1, n_instances)


def _check_logits(z: Tensor, tuple_size: int) -> None:
    if not isinstance(z, Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"logits z: expected a tensor (N instances, k bits), got {shape}")
    if not z.is_floating_point():
        raise ValueError(f"logits z: expected a floating-point tensor, got {z.dtype}")
    if z.shape[0] < 1:
        raise ValueError("logits z: expected at least one instance (row), got 0")
    integral = not isinstance(tuple_size, bool) and int(tuple_size) == tuple_size
    if not integral or not 2 <= tuple_size <= z.shape[1]:
        raise ValueError(
            f"tuple_size: expected an integer in [2, k={z.shape[1]}], got {tuple_size}"
        )


def tuple_family(k: int, tuple_size: int, cover_size: int | None = None, seed: int = 0) -> Tensor | None:
    """The bit tuples of the Shannon term: ``None`` for every ``tuple_size``-subset of the
    k bits (``cover_size`` None or equal to ``tuple_size``, the thesis default), else the
    thesis' random cover, an int64 tensor ``(C(k, cover_size), tuple_size)``: every
    ``cover_size``-subset of the bits completed with random other bits
    (:func:`equihash.train.evaluation.covering_family` on the stream ``"tuple_cover"``,
    independent of the family the training-time evaluation measures). The thesis' SHQuad
    model takes 4-tuples covering every triple (``cover_size`` 3).

    The family depends only on ``(k, tuple_size, cover_size, seed)``.
    """
    k, t = int(k), int(tuple_size)
    if not 2 <= t <= k:
        raise ValueError(f"tuple_size: expected an integer in [2, k={k}], got {tuple_size}")
    cover = t if cover_size is None else int(cover_size)
    if not 1 <= cover <= t:
        raise ValueError(f"cover_size: expected an integer in [1, tuple_size={t}], got {cover_size}")
    if cover == t:
        return None
    return torch.from_numpy(covering_family(k, t, cover, seed, stream="tuple_cover"))


def _check_tuples(tuples, k: int, tuple_size: int) -> Tensor:
    """A tuple family as distinct rows of strictly ascending bit indices (duplicates are
    counted once: the family is a set of tuples)."""
    if not isinstance(tuples, Tensor) or tuples.dim() != 2 or tuples.shape[1] != tuple_size:
        shape = tuple(tuples.shape) if isinstance(tuples, Tensor) else type(tuples).__name__
        raise ValueError(f"tuples: expected a tensor (F tuples, tuple_size={tuple_size}), got {shape}")
    if tuples.dtype.is_floating_point or tuples.dtype == torch.bool or tuples.shape[0] == 0:
        raise ValueError(f"tuples: expected a non-empty integer tensor, got {tuples.dtype}, {tuples.shape[0]} rows")
    rows = tuples.to(torch.int64).sort(dim=1).values
    if rows.min() < 0 or rows.max() >= k or not (rows[:, 1:] > rows[:, :-1]).all():
        raise ValueError(f"tuples: expected {tuple_size} distinct bit indices in [0, {k}) per row")
    return torch.unique(rows, dim=0)


def _sub_tuple_plan(tuples: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(subs, allowed)`` for a family of tuples (distinct, ascending rows): the distinct
    sub-tuples ``S = T - {i}`` of the family's tuples, ``(nS, t-1)`` ascending rows, and the
    mask ``allowed (nS, k)``: ``allowed[s, i]`` iff ``subs[s] + {i}`` is a tuple of the family."""
    n_tuples, t = tuples.shape
    positions = torch.arange(t, device=tuples.device)
    keep = positions.expand(t, t)[~torch.eye(t, dtype=torch.bool, device=tuples.device)].view(t, t - 1)
    subs, inverse = torch.unique(tuples[:, keep].reshape(-1, t - 1), dim=0, return_inverse=True)
    allowed = torch.zeros(subs.shape[0], k, dtype=torch.bool, device=tuples.device)
    allowed[inverse, tuples.reshape(-1)] = True  # row (f, m) of keep drops position m: bit tuples[f, m]
    return subs, allowed


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (float32, half, bfloat16) runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def shannon_gradient(
    z: Tensor,
    tuple_size: int = 3,
    gradient: str = "normal",
    prior: float = 1.0,
    *,
    tuples: Tensor | None = None,
    max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Gradient of ``-sum_T H_T`` (the negated Shannon term) with respect to the logits.

    Args:
        z: logits ``(N, k)``, one row per instance (N = 2n for n positive pairs). Not
            differentiated through (detached); any device.
        tuple_size: size ``t >= 2`` of the bit tuples.
        tuples: the tuples T summed over: ``None`` for all ``C(k, t)`` of them, or a family
            ``(F, t)`` of bit indices (e.g. :func:`tuple_family`; row order and the order
            within a row do not matter, a repeated tuple counts once).
        gradient: ``"normal"`` (the exact gradient) or ``"pseudo-smooth"`` (``l`` from the
            hard codes' configuration counts with ``prior``; see the module docstring).
        prior: pseudo-count added to every full-tuple configuration count (pseudo-smooth
            only; must be > 0 so that every log is finite).
        max_chunk_elements: about this many elements of ``Q`` (N x sub-tuple
            configurations; at least one sub-tuple's) are materialised at once; only
            memory and speed depend on it.

    Returns:
        ``(grad, total_entropy)``: ``grad`` has z's shape and dtype (to be *added* to the
        gradient of a loss that is minimised, times the Shannon weight); ``total_entropy``
        is ``sum_T H_T`` in nats over the tuples summed over, of the soft batch-average
        distributions (also for the
        pseudo-smooth variant, so that runs of both variants log the same quantity), a
        float64 scalar tensor. Computation runs in float32 (float64 for float64 input);
        ``A0``/``A1`` are clamped below at the dtype's smallest normal number so that
        saturated logits (|z| of 50 and more) give finite results.
    """
    _check_logits(z, tuple_size)
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient: expected one of {GRADIENTS}, got {gradient!r}")
    pseudo = gradient == "pseudo-smooth"
    if pseudo and not prior > 0:
        raise ValueError(f"prior: expected a positive pseudo-count, got {prior}")
    if max_chunk_elements < 1:
        raise ValueError(f"max_chunk_elements: expected >= 1, got {max_chunk_elements}")

    n_instances, k = z.shape
    work = _working_dtype(z.dtype)
    tiny = torch.finfo(work).tiny
    x = z.detach().to(work)
    p1, p0 = torch.sigmoid(x), torch.sigmoid(-x)  # sigmoid(-x), not 1 - sigmoid(x): exact tails
    soft = torch.stack((p0.T, p1.T), dim=1).contiguous()  # (k, 2, N): P_j(b=0), P_j(b=1)
    soft_right = torch.cat((p1, p0), dim=1)  # (N, 2k): columns [P(i=1) | P(i=0)]
    if pseudo:
        hard1 = (x > 0).to(work)
        hard = torch.stack((1 - hard1.T, hard1.T), dim=1).contiguous()
        hard_right = torch.cat((hard1, 1 - hard1), dim=1)

    sub_size = int(tuple_size) - 1
    if tuples is None:
        subs = _subsets(k, sub_size).to(z.device)
        # (i, S) is a tuple unless bit i belongs to sub-tuple S.
        allowed = torch.ones(subs.shape[0], k, dtype=torch.bool, device=z.device)
        allowed[torch.arange(subs.shape[0], device=z.device)[:, None], subs] = False
    else:
        subs, allowed = _sub_tuple_plan(_check_tuples(tuples, k, sub_size + 1).to(z.device), k)
    n_subs, n_configs = subs.shape[0], 1 << sub_size
    bits = torch.arange(k, device=z.device)

    chunk = max(1, max_chunk_elements // (n_instances * n_configs))
    contraction = torch.zeros(n_instances, k, dtype=work, device=z.device)
    total_entropy = torch.zeros((), dtype=torch.float64, device=z.device)
    for start in range(0, n_subs, chunk):
        chunk_subs = subs[start : start + chunk]
        width = chunk_subs.shape[0]
        q_t = _configuration_probabilities(soft, chunk_subs)  # Q^T: (width * n_configs, N)
        a = q_t @ soft_right  # (width * n_configs, 2k): [A1 | A0], transposed
        if pseudo:
            counts = _configuration_probabilities(hard, chunk_subs) @ hard_right
            log_ratio = torch.log(counts[:, :k] + prior) - torch.log(counts[:, k:] + prior)
        else:
            log_ratio = torch.log(a[:, :k].clamp_min(tiny)) - torch.log(a[:, k:].clamp_min(tiny))
        chunk_allowed = allowed[start : start + width]
        log_ratio.view(width, n_configs, k).masked_fill_(~chunk_allowed[:, None, :], 0.0)  # L^T
        contraction.addmm_(q_t.T, log_ratio)  # sum over (S, c_S) of P_j(S=c_S) l[i,S,c_S]

        # Entropy: tuple T = {i} + S is seen once per bit i in T; count it at i = min(T).
        first = (chunk_subs[:, :1] > bits[None, :]) & chunk_allowed  # (width, k)
        p = a.to(torch.float64).view(width, n_configs, 2, k) / n_instances
        h = -torch.special.xlogy(p, p).sum(dim=(1, 2))  # (width, k): H_T of T = {i} + S
        total_entropy += h[first].sum()

    grad = contraction * (p1 * p0) / n_instances
    return grad.to(z.dtype), total_entropy


def entropy_of_tuples(z: Tensor, tuple_size: int = 3, tuples: Tensor | None = None) -> Tensor:
    """``sum_T H_T`` (nats) over all ``tuple_size``-subsets T of the bits (or over the
    family ``tuples``, as in :func:`shannon_gradient`), written out directly and
    differentiable by autograd: the reference for :func:`shannon_gradient`.

    Materialises ``(N, F * 2**t)`` probabilities for F tuples, so it is meant for small k.
    """
    _check_logits(z, tuple_size)
    soft = torch.stack((torch.sigmoid(-z).T, torch.sigmoid(z).T), dim=1)  # (k, 2, N)
    if tuples is None:
        tuples = _subsets(z.shape[1], tuple_size).to(z.device)
    else:
        tuples = _check_tuples(tuples, z.shape[1], tuple_size).to(z.device)
    p = _configuration_probabilities(soft, tuples).mean(dim=1)  # p_T(c), all T and c
    return -torch.special.xlogy(p, p).sum()
