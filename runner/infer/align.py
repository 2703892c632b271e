"""Per-patch gains that make independently predicted object patches agree on their overlaps.

A far-field amplitude cannot see a patch's constant phase, so patches predicted one at a time
disagree with their neighbours by one phase factor each (and by some scale), and their average
draws a grid of patch-sized tiles. ``align_gains`` finds gains g ``(P,)`` that minimize the
residual the stitch averages away (``runner/infer/stitch.py``). With u_p(x) and w_p(x)
patch p's weighted values and weights as the stitch splats them onto object pixel x
(bilinear, after ``trim``, times the pixel weight), W = Σ_q w_q and Ō = Σ_q g_q·u_q / W the
stitched object,

    E(g) = Σ_p Σ_x w_p·|g_p·u_p / w_p − Ō|² = Σ_{p<q} Σ_x (w_p·w_q / W)·|g_p·u_p/w_p − g_q·u_q/w_q|²,

the weighted disagreement of every overlapping pair. Expanded, E = gᴴ(D − B)g with
D_pp = Σ_x |u_p|² / w_p (Σ_i w(i)|O_p(i)|² at integer positions) and B_pq = Σ_x conj(u_p)·u_q / W
over the two patches' overlap. The minimum of E / gᴴDg is the top
eigenvector of the normalized operator M = D^-½·B·D^-½ (eigenvalues in [0, 1], 1 when the
patches agree exactly): the spectral relaxation of angular synchronization over the overlap
graph (Singer 2011, "Angular synchronization by eigenvectors and semidefinite programming").
By default only its phases are kept (|g_p| = 1, Singer's rounding): the model's gain is one
scalar for all patches, so each pattern's energy fixes its patch's scale, and on predicted
patches the eigenvector's magnitudes drift across the scan (they concentrate on the
best-agreeing region) instead of correcting it. ``scale=True`` keeps the magnitudes: exact
when the patches differ only by complex factors.

Fixing one gain to 1 and solving the remaining linear least-squares problem instead is biased:
noise in O_q shrinks each fitted g_q below its neighbours', and the shrinkage compounds with
the distance from the fixed patch. The eigenvector absorbs that uniform shrinkage into its
eigenvalue. The eigenvector is found per connected component of the overlap graph by
restarted Lanczos with full reorthogonalization (all components at once, with segment sums),
then gauge-fixed per component: mean gain magnitude 1, and the aligned patches' weighted
mean phase 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

DARK = 1e-10  # patches with less weighted energy than this share of the brightest keep gain 1
EDGE_FLOOR = 1e-9  # couplings |M_pq| below this (zero-weight taps, rounding) do not connect
LANCZOS_STEPS = 48  # Krylov vectors per restart
MAX_RESTARTS = 100
TOLERANCE = 1e-9  # per-component residual |M·g − θ·g| (g of norm 1) at which the gains are final
BREAKDOWN = 1e-12  # Krylov vector norm below which a component's Krylov space is exhausted
CHUNK_ELEMENTS = 1 << 22  # values gathered at once: bounds the temporary arrays to ~64 MiB
SAMPLED_SIDE = 32  # windows wider than this are sampled every ⌊side / 32⌋-th canvas row and
# column: one gain per patch needs far fewer than the ~10³ samples left per overlap, and the
# pair products, the cost that grows with the overlap, shrink by the stride squared


def align_gains(
    patches: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    *,
    trim: int,
    pixel_weight: np.ndarray | None = None,
    scale: bool = False,
) -> np.ndarray:
    """Gains ``(P,)`` complex128 for patches ``(P, N, N)`` complex at scan positions
    ``x_px, y_px (P,)`` px such that ``gains[:, None, None] * patches`` agree best on their
    overlaps, under the conventions of ``stitch`` (same ``trim``, ``pixel_weight`` and bilinear
    placement): phase factors of modulus 1, or with ``scale`` complex factors of mean modulus
    1. Each connected group of overlapping patches is gauge-fixed on its own; patches that are
    dark over their kept region get gain 1.
    """
    patches = np.asarray(patches)
    n = patches.shape[-1]
    weight = _core_weight(n, trim, pixel_weight)
    core = patches[:, trim : n - trim, trim : n - trim]
    corner = np.stack([np.asarray(y_px, np.float64), np.asarray(x_px, np.float64)], -1)
    corner = corner - n / 2 + trim  # (P, 2) [row, column] of core pixel (0, 0)
    gains = np.ones(len(core), np.complex128)
    if len(core) == 0:
        return gains
    scaled, energy, base = _sampled_windows(core, weight, corner)
    lit = np.flatnonzero(energy > DARK * energy.max())
    if len(lit) == 0:
        return gains
    if len(lit) < len(core):
        scaled = scaled[lit]
    first, second, coupling = _coupled_pairs(scaled, base[lit], energy[lit])
    weighted_sum = np.einsum("pij,ij->p", core[lit], weight)  # Σ_i w·O_p: the gauge's anchor
    gains[lit] = _synchronize(first, second, coupling, energy[lit], weighted_sum, scale=scale)
    return gains


def _core_weight(n: int, trim: int, pixel_weight: np.ndarray | None) -> np.ndarray:
    """The stitch's per-pixel weight ``(k, k)`` float64 over the kept core, k = N − 2·trim."""
    if not 0 <= trim < n / 2:
        msg = f"trim must be in [0, {n // 2}) for {n} px patches (got {trim})"
        raise ValueError(msg)
    if pixel_weight is None:
        return np.ones((n - 2 * trim,) * 2)
    weight = np.asarray(pixel_weight, np.float64)
    if weight.shape != (n, n) or not np.isfinite(weight).all() or (weight < 0).any():
        msg = f"pixel_weight must be finite, ≥ 0 and {n}×{n} (got shape {weight.shape})"
        raise ValueError(msg)
    return weight[trim : n - trim, trim : n - trim]


def _splat_windows(values: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Bilinear splat of ``values (P, k, k)`` whose pixel (0, 0) sits ``frac (P, 2)`` px past an
    integer corner onto that corner's ``(P, k+1, k+1)`` window: the taps of ``stitch``."""
    fy, fx = frac[:, 0, None, None], frac[:, 1, None, None]
    out = np.zeros((len(frac), values.shape[-2] + 1, values.shape[-1] + 1), values.dtype)
    out[:, :-1, :-1] += (1 - fy) * (1 - fx) * values
    out[:, :-1, 1:] += (1 - fy) * fx * values
    out[:, 1:, :-1] += fy * (1 - fx) * values
    out[:, 1:, 1:] += fy * fx * values
    return out


def _sampled_windows(
    core: np.ndarray, weight: np.ndarray, corner: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each patch on the canvas pixels S it reaches: u_p / √W ``(P, m, m)`` (the Gram matrix of
    these over overlaps is B), the energies D_pp = Σ_{x∈S} |u_p|² / w_p ``(P,)`` (w_p = the
    patch's splatted weight) and the windows' corners ``(P, 2)`` on the grid of S. S is every
    ``stride``-th canvas row and column (all of them for windows up to ``SAMPLED_SIDE``); as
    E restricted to S keeps B's row sums equal to D for patches that agree, gains that make
    patches agree stay exact. Two passes over chunks of patches: W, then the windows."""
    side = core.shape[-1] + 1
    stride = max(1, side // SAMPLED_SIDE)
    base = np.floor(corner).astype(np.int64)
    frac = corner - base
    skip = (-base) % stride  # (P, 2) window rows/columns before the first one in S
    m = -(-side // stride)
    take = np.minimum(skip[:, :, None] + stride * np.arange(m), side - 1)  # (P, 2, m)
    inside = (skip[:, :, None] + stride * np.arange(m)) < side
    origin = base.min(axis=0)
    shape = tuple(base.max(axis=0) - origin + side)
    chunk = max(1, CHUNK_ELEMENTS // side**2)
    chunks = [slice(start, start + chunk) for start in range(0, len(core), chunk)]
    ii = np.arange(side)

    def canvas_index(part: slice) -> np.ndarray:
        rows = (base[part, 0] - origin[0])[:, None, None] + ii[None, :, None]
        cols = (base[part, 1] - origin[1])[:, None, None] + ii[None, None, :]
        return rows * shape[1] + cols  # (p, side, side)

    def sample(windows: np.ndarray, part: slice) -> np.ndarray:
        if stride == 1:
            return windows
        rows, cols = take[part, 0][:, :, None], take[part, 1][:, None, :]
        keep = inside[part, 0][:, :, None] & inside[part, 1][:, None, :]
        return windows[np.arange(len(windows))[:, None, None], rows, cols] * keep

    total = np.zeros(shape[0] * shape[1])
    for part in chunks:
        spread = _splat_windows(np.broadcast_to(weight, core[part].shape), frac[part])
        total += np.bincount(canvas_index(part).ravel(), spread.ravel(), minlength=total.size)
    inverse_root = np.where(total > 0, 1 / np.sqrt(np.where(total > 0, total, 1)), 0)
    scaled = np.empty((len(core), m, m), np.result_type(core.dtype, np.complex64))
    energy = np.empty(len(core))
    for part in chunks:
        u = sample(_splat_windows((weight * core[part]).astype(scaled.dtype), frac[part]), part)
        own = sample(_splat_windows(np.broadcast_to(weight, core[part].shape), frac[part]), part)
        scaled[part] = u * sample(inverse_root[canvas_index(part)], part).astype(u.real.dtype)
        energy[part] = (np.abs(u) ** 2 / np.where(own > 0, own, np.inf)).sum(axis=(1, 2))
    return scaled, energy, (base + skip) // stride


def _overlapping_pairs(base: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(first, second)`` with first < second of windows whose corners ``base
    (P, 2)`` lie within ``reach`` px on both axes: a grid of cells ``reach + 1`` wide, sorted,
    and each window's 3 × 3 block of cells looked up with ``searchsorted``."""
    cell = (base - base.min(axis=0)) // (reach + 1) + 1  # margin of one cell: no wrap-around
    stride = int(cell[:, 1].max()) + 2
    key = cell[:, 0] * stride + cell[:, 1]
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    firsts, seconds = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            target = key + dy * stride + dx
            lo = np.searchsorted(sorted_key, target, "left")
            count = np.searchsorted(sorted_key, target, "right") - lo
            first = np.repeat(np.arange(len(key)), count)
            offset = np.arange(len(first)) - np.repeat(np.cumsum(count) - count, count)
            second = order[np.repeat(lo, count) + offset]
            near = (first < second) & (np.abs(base[first] - base[second]) <= reach).all(axis=1)
            firsts.append(first[near])
            seconds.append(second[near])
    return np.concatenate(firsts), np.concatenate(seconds)


def _overlap_products(
    scaled: np.ndarray, base: np.ndarray, first: np.ndarray, second: np.ndarray
) -> np.ndarray:
    """B_pq = Σ conj(scaled_p)·scaled_q over the overlap of each pair's windows ``(pairs,)``
    complex128: pairs grouped by the integer offset of their windows, each group one batched
    slice-and-``vecdot`` (a loop over distinct offsets, never over pairs)."""
    side = scaled.shape[-1]
    delta = base[second] - base[first]  # (pairs, 2) in [−side + 1, side − 1]
    key = (delta[:, 0] + side) * (2 * side + 1) + delta[:, 1] + side
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order], prepend=-1, append=-1))
    out = np.empty(len(first), np.complex128)
    for lo, hi in itertools.pairwise(bounds):
        dy, dx = delta[order[lo]]
        rows, cols = (
            slice(max(0, dy), min(side, side + dy)),
            slice(max(0, dx), min(side, side + dx)),
        )
        rows_q, cols_q = (
            slice(rows.start - dy, rows.stop - dy),
            slice(cols.start - dx, cols.stop - dx),
        )
        chunk = max(1, CHUNK_ELEMENTS // ((rows.stop - rows.start) * (cols.stop - cols.start)))
        for start in range(lo, hi, chunk):
            idx = order[start : min(hi, start + chunk)]
            a = scaled[first[idx], rows, cols].reshape(len(idx), -1)
            b = scaled[second[idx], rows_q, cols_q].reshape(len(idx), -1)
            out[idx] = np.vecdot(a, b)  # conjugates a
    return out


def _coupled_pairs(
    scaled: np.ndarray, base: np.ndarray, energy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalized couplings M_pq = B_pq / √(D_pp·D_qq) ``(pairs,)`` of the overlapping pairs
    ``(first, second)`` whose coupling reaches ``EDGE_FLOOR``, and the diagonal appended as
    pairs (p, p), so every patch appears; windows that touch only through zero-weight taps do
    not join two groups into one."""
    first, second = _overlapping_pairs(base, reach=scaled.shape[-1] - 1)
    norm = np.sqrt(energy)
    coupling = _overlap_products(scaled, base, first, second) / (norm[first] * norm[second])
    strong = np.abs(coupling) >= EDGE_FLOOR
    diagonal = np.einsum("pij,pij->p", scaled.conj(), scaled).real / energy
    every = np.arange(len(energy))
    return (
        np.concatenate([first[strong], every]),
        np.concatenate([second[strong], every]),
        np.concatenate([coupling[strong], diagonal]),
    )


def _components(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Connected-component labels ``(n,)`` in 0 … K−1 of the graph with edges (first, second):
    every round hooks each tree's root onto the smallest root it has an edge to, then
    flattens the trees by pointer jumping (Shiloach–Vishkin style, all edges at once)."""
    label = np.arange(n)
    while True:
        ends = np.sort(np.stack([label[first], label[second]]), axis=0)  # (2, edges) roots
        hooked = label.copy()
        np.minimum.at(hooked, ends[1], ends[0])
        while not np.array_equal(jumped := hooked[hooked], hooked):
            hooked = jumped
        if np.array_equal(hooked, label):
            return np.unique(label, return_inverse=True)[1]
        label = hooked


def _synchronize(
    first: np.ndarray,
    second: np.ndarray,
    coupling: np.ndarray,
    energy: np.ndarray,
    weighted_sum: np.ndarray,
    *,
    scale: bool,
) -> np.ndarray:
    """Gains ``(P,)`` complex128: the top eigenvector of M (entries ``coupling`` at (first,
    second), Hermitian) on each connected component, scaled back by D^-½ (or, without
    ``scale``, reduced to its phases) and gauge-fixed."""
    component = _components(len(energy), first, second)
    order = np.argsort(component, kind="stable")  # each component one contiguous run
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    sizes = np.bincount(component)
    matvec = _hermitian_matvec(rank[first], rank[second], coupling, len(order))
    start = np.array([0.1, 0.1j]) @ np.random.default_rng(0).normal(size=(2, len(order)))
    vector = _top_eigenvectors(matvec, sizes, 1 + start)
    gains = np.empty(len(order), np.complex128)
    gains[order] = vector / np.sqrt(energy[order])
    if not scale:
        magnitude = np.abs(gains)
        gains = np.where(magnitude > 0, gains / np.where(magnitude > 0, magnitude, 1), 1)
    return _fix_gauge(gains, component, weighted_sum)


def _hermitian_matvec(
    first: np.ndarray, second: np.ndarray, values: np.ndarray, n: int
) -> Callable[[np.ndarray], np.ndarray]:
    """x ↦ M·x for the Hermitian ``(n, n)`` M with M[first, second] = values (pairs with
    first == second are the diagonal, every row has one): sorted rows and ``add.reduceat``."""
    off = first != second
    rows = np.concatenate([first, second[off]])
    cols = np.concatenate([second, first[off]])
    entries = np.concatenate([values, values[off].conj()])
    order = np.argsort(rows, kind="stable")
    rows, cols, entries = rows[order], cols[order], entries[order]
    starts = np.searchsorted(rows, np.arange(n))
    return lambda x: np.add.reduceat(entries * x[cols], starts)


def _top_eigenvectors(
    matvec: Callable[[np.ndarray], np.ndarray], sizes: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """The top eigenvector ``(n,)`` of each diagonal block (``sizes (K,)`` consecutive rows) of
    a Hermitian operator, each of norm 1: Lanczos restarted from the Ritz vector until every
    block's residual is below ``TOLERANCE`` (or ``MAX_RESTARTS``)."""
    segments = _Segments(sizes)
    x = segments.normalized(start)
    for _ in range(MAX_RESTARTS):
        basis, tridiagonal = _lanczos(matvec, x, segments)
        values, vectors = np.linalg.eigh(tridiagonal)  # (K, m), (K, m, m), ascending
        x = segments.normalized((segments.spread(vectors[:, :, -1].T) * basis).sum(axis=0))
        residual = matvec(x) - segments.spread(values[:, -1]) * x
        if segments.norm(residual).max() < TOLERANCE:
            break
    return x


class _Segments:
    """Per-block sums and broadcasts over consecutive blocks of ``sizes (K,)`` entries."""

    def __init__(self, sizes: np.ndarray) -> None:
        self.sizes = sizes
        self.starts = np.cumsum(sizes) - sizes

    def sum(self, values: np.ndarray) -> np.ndarray:
        """``(..., n)`` → ``(..., K)``."""
        return np.add.reduceat(values, self.starts, axis=-1)

    def spread(self, per_block: np.ndarray) -> np.ndarray:
        """``(..., K)`` → ``(..., n)``."""
        return np.repeat(per_block, self.sizes, axis=-1)

    def norm(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(self.sum(np.abs(x) ** 2))

    def normalized(self, x: np.ndarray) -> np.ndarray:
        norm = self.norm(x)
        return x / self.spread(np.where(norm > 0, norm, 1))


def _lanczos(
    matvec: Callable[[np.ndarray], np.ndarray], x: np.ndarray, segments: _Segments
) -> tuple[np.ndarray, np.ndarray]:
    """``LANCZOS_STEPS`` Lanczos steps from ``x`` on every block at once: the Krylov basis
    ``(m, n)`` and each block's tridiagonal projection ``(K, m, m)``. Full reorthogonalization
    (two Gram–Schmidt sweeps); a block whose Krylov space is exhausted continues with zeros."""
    steps = LANCZOS_STEPS
    basis = np.zeros((steps + 1, len(x)), np.complex128)
    basis[0] = x
    tri = np.zeros((len(segments.sizes), steps, steps))
    for j in range(steps):
        w = matvec(basis[j])
        for sweep in range(2):
            overlap = segments.sum(basis[: j + 1].conj() * w)  # (j+1, K)
            w = w - (segments.spread(overlap) * basis[: j + 1]).sum(axis=0)
            if sweep == 0:
                tri[:, j, j] = overlap[j].real
        beta = segments.norm(w)
        live = beta > BREAKDOWN
        basis[j + 1] = w * segments.spread(np.where(live, 1 / np.where(live, beta, 1), 0))
        if j + 1 < steps:
            tri[:, j + 1, j] = tri[:, j, j + 1] = np.where(live, beta, 0)
    return basis[:steps], tri


def _fix_gauge(gains: np.ndarray, component: np.ndarray, weighted_sum: np.ndarray) -> np.ndarray:
    """Per component: scale so the mean |g_p| is 1, and rotate so Σ_p g_p·Σ_i w·O_p is real
    and positive: the aligned patches' weighted mean phase is 0, so a stitched object whose
    phase varies by less than π stays clear of the ±π wrap."""
    count = np.bincount(component)
    mean_magnitude = np.bincount(component, np.abs(gains)) / count
    gains = gains / np.where(mean_magnitude > 0, mean_magnitude, 1)[component]
    anchor = gains * weighted_sum
    total = np.bincount(component, anchor.real) + 1j * np.bincount(component, anchor.imag)
    rotation = np.where(np.abs(total) > 0, np.abs(total) / np.where(total != 0, total, 1), 1)
    return gains * rotation[component]
