"""Groups of scan positions ("solution regions") and the dataset amplitude scale.

Sample-then-group, as ``ptycho/raw_data.py`` ``generate_grouped_data``: draw ``n_groups`` seed
patterns, then (gridsize g > 1) give each seed a pool of its K nearest other patterns and pick
C = g² of the pool without replacement. The seed itself is not in its pool (the reference
queries K + 1 neighbours and drops self), so on a raster with K = 4 a group is the seed's four
axial neighbours, centred on the seed. Everything is vectorized over groups.
"""

from __future__ import annotations

from typing import Literal, NoReturn

import numpy as np
import torch
from attrs import frozen

from ptycho_spec.errors import DataError

_KNN_CHUNK_ELEMENTS = 1 << 20  # distance entries per chunk: 8 MiB of float64, cache-sized


@frozen(kw_only=True)
class Groups:
    """Grouped scan positions.

    ``indices`` ``(G, C)`` int64: pattern indices, channel c ↔ row-major cell (c // g, c % g).
    ``coords`` ``(G, C, 2)`` float64: absolute [x, y] px of each pattern.
    ``offsets`` ``(G, 2)`` float64: group centres, the mean of ``coords`` over C.
    ``relative`` ``(G, C, 2)`` float64: −(coords − offsets), the reference sign
    (``ptycho/raw_data.py`` ``get_relative_coords``).
    """

    indices: np.ndarray
    coords: np.ndarray
    offsets: np.ndarray
    relative: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def input_scale(amplitude: np.ndarray, N: int) -> float:
    """r = sqrt((N/2)² / mean_m Σ_hw X²) for amplitudes ``(M, N, N)`` (or ``(M, C, N, N)``).

    Summed in float64, chunk by chunk, so integer or float32 data neither overflow nor round
    (``ptycho/raw_data.py`` ``normalize_data``).
    """
    flat = np.asarray(amplitude).reshape(-1, N * N)
    energy = sum(
        float(np.square(chunk, dtype=np.float64).sum())
        for chunk in np.array_split(flat, max(1, len(flat) // 1024))
    )
    mean_energy = energy / len(flat)
    if not mean_energy > 0:
        msg = "the diffraction amplitudes are all zero"
        raise DataError(msg)
    return float(np.sqrt((N / 2) ** 2 / mean_energy))


def _reject(message: str, key: str, source: str | None) -> NoReturn:
    raise DataError(message, path=source, key=key)


def _pool(
    m: int, n_subsample: int | None, sequential: bool, rng: np.random.Generator, source: str | None
) -> np.ndarray:
    """Indices that may seed or join groups: all M, or an ``n_subsample`` subset in scan order."""
    if n_subsample is None:
        return np.arange(m)
    if n_subsample > m:
        _reject(f"n_subsample = {n_subsample} exceeds the {m} patterns", "n_subsample", source)
    if sequential:
        return np.arange(n_subsample)
    return np.sort(rng.choice(m, size=n_subsample, replace=False))


def _seeds(
    p: int,
    n_groups: int | Literal["all"],
    sequential: bool,
    rng: np.random.Generator,
    source: str | None,
) -> np.ndarray:
    """Positions within the pool of the group seeds ``(G,)``."""
    if n_groups == "all":
        return np.arange(p)
    if n_groups > p:
        _reject(f"n_groups = {n_groups} exceeds the {p} available patterns", "n_groups", source)
    if sequential:
        return np.arange(n_groups)
    return rng.choice(p, size=n_groups, replace=False)


def nearest_neighbors(points: np.ndarray, seeds: np.ndarray, k: int) -> np.ndarray:
    """The k nearest other points of each seed: ``points (P, 2)``, ``seeds (G,)`` → ``(G, k)``.

    Ordered by distance, ties by index (exact in float64, platform independent), the seed
    excluded. Brute force over chunks of seeds small enough to stay in cache: O(G·P) work,
    about 3 s for G = P = 20 000 on 2 cores.
    """
    pts = torch.from_numpy(np.asarray(points, dtype=np.float64))
    rows_per_chunk = max(1, _KNN_CHUNK_ELEMENTS // len(pts))
    parts = []
    for start in range(0, len(seeds), rows_per_chunk):
        rows = torch.from_numpy(np.asarray(seeds[start : start + rows_per_chunk], dtype=np.int64))
        d2 = (pts[rows, None, 0] - pts[None, :, 0]).square_()
        d2.add_((pts[rows, None, 1] - pts[None, :, 1]).square_())  # (g, P)
        d2[torch.arange(len(rows)), rows] = torch.inf
        parts.append(_k_smallest(d2, k))
    return torch.cat(parts).numpy()


def _k_smallest(d2: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the k smallest entries per row of ``d2 (g, P)``, ties by lower index."""
    kth = torch.topk(d2, k, dim=1, largest=False).values[:, -1:]  # the k-th smallest distance
    below = d2 < kth
    at = d2 == kth
    need = k - below.sum(dim=1, keepdim=True)  # how many ties at the threshold to take
    take = below | (at & (at.cumsum(dim=1) <= need))
    cols = take.nonzero()[:, 1].reshape(len(d2), k)  # exactly k per row, in index order
    order = torch.sort(torch.gather(d2, 1, cols), dim=1, stable=True).indices
    return torch.gather(cols, 1, order)


def group_scan(
    x_px: np.ndarray,
    y_px: np.ndarray,
    *,
    gridsize: int,
    n_groups: int | Literal["all"],
    neighbor_count: int | None,
    sequential: bool,
    seed: int,
    n_subsample: int | None = None,
    source: str | None = None,
) -> Groups:
    """Group scan positions ``x_px, y_px (M,)`` into ``n_groups`` samples of C = gridsize².

    ``n_subsample`` first restricts the scan to a random subset (the first ones if
    ``sequential``); ``n_groups = "all"`` seeds one group per remaining pattern. Seeds are a
    random draw without replacement (the first ``n_groups`` if ``sequential``); for C > 1 each
    seed's K = ``neighbor_count`` nearest other patterns form its pool, of which C are chosen
    without replacement. One ``numpy.random.Generator(seed)`` drives every draw. Asking for more
    groups than patterns, or C > K, raises ``DataError`` (``source`` names the file).
    """
    x = np.asarray(x_px, dtype=np.float64)
    y = np.asarray(y_px, dtype=np.float64)
    c = gridsize**2
    rng = np.random.default_rng(seed)
    pool = _pool(len(x), n_subsample, sequential, rng, source)
    seeds = _seeds(len(pool), n_groups, sequential, rng, source)
    if c == 1:
        members = seeds[:, None]
    else:
        if neighbor_count is None or neighbor_count < c:
            _reject(
                f"gridsize {gridsize} needs neighbor_count ≥ {c} (got {neighbor_count})",
                "neighbor_count",
                source,
            )
        if neighbor_count >= len(pool):
            _reject(
                f"neighbor_count = {neighbor_count} needs more than the {len(pool)} patterns",
                "neighbor_count",
                source,
            )
        points = np.stack([x[pool], y[pool]], axis=-1)
        candidates = nearest_neighbors(points, seeds, neighbor_count)  # (G, K)
        pick = np.argsort(rng.random(candidates.shape), axis=1)[:, :c]  # C of K, no replacement
        members = np.take_along_axis(candidates, pick, axis=1)
    indices = pool[members].astype(np.int64)
    coords = np.stack([x[indices], y[indices]], axis=-1)
    offsets = coords.mean(axis=1)
    return Groups(
        indices=indices, coords=coords, offsets=offsets, relative=-(coords - offsets[:, None, :])
    )
