"""Translation, patch cropping and the overlap constraint (merge/extract)."""

from __future__ import annotations

import pytest
import torch
from images import smooth_object

from runner.physics.shift import (
    central_box,
    crop_patches,
    extract_patches,
    merge_patches,
    translate,
)


def randc(*shape: int, seed: int = 0, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


class TestTranslate:
    def test_content_moves_by_plus_d(self) -> None:
        """A bright pixel at (row 10, col 20) moved by d = [x 3, y −2] lands at (8, 23)."""
        img = torch.zeros(32, 32, dtype=torch.complex64)
        img[10, 20] = 1
        out = translate(img, torch.tensor([3.0, -2.0]))
        assert divmod(int(out.abs().argmax()), 32) == (8, 23)
        assert float(out.abs().sum()) == pytest.approx(1.0)

    def test_integer_shift_is_exact(self) -> None:
        """Integer shifts are exact crops with zero fill."""
        img = randc(16, 16)
        out = translate(img, torch.tensor([2.0, 1.0]))
        torch.testing.assert_close(out[1:, 2:], img[:-1, :-2], rtol=0, atol=0)
        assert float(out[0].abs().sum() + out[:, :2].abs().sum()) == 0

    def test_half_pixel_is_the_mean_of_neighbours(self) -> None:
        """A shift of +0.5 px along x averages each pixel with its left neighbour."""
        img = randc(8, 8, dtype=torch.complex128)
        out = translate(img, torch.tensor([0.5, 0.0], dtype=torch.float64))
        torch.testing.assert_close(out[:, 1:], (img[:, 1:] + img[:, :-1]) / 2)

    def test_round_trip_inside(self) -> None:
        """Moving by d then by −d restores the interior of a smooth image."""
        img = smooth_object(48, seed=1)
        d = torch.tensor([1.3, -2.6], dtype=torch.float64)
        back = translate(translate(img, d), -d)
        assert float((back - img)[6:-6, 6:-6].abs().max()) < 0.02

    def test_per_image_shifts_broadcast(self) -> None:
        """Each image of a batch gets its own shift; shifts broadcast over extra leading axes."""
        img = randc(2, 3, 8, 8)
        d = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
        out = translate(img, d)
        for b in range(2):
            for c in range(3):
                torch.testing.assert_close(out[b, c], translate(img[b, c], d[c]))

    def test_gradient_is_the_adjoint(self) -> None:
        """The gradient of ⟨translate(x, d), y⟩ with respect to x is translate's adjoint: finite and exact."""
        x = randc(8, 8, dtype=torch.complex128).requires_grad_()
        y = randc(8, 8, seed=1, dtype=torch.complex128)
        d = torch.tensor([0.3, 1.7], dtype=torch.float64)
        (translate(x, d) * y.conj()).real.sum().backward()
        assert torch.isfinite(torch.view_as_real(x.grad)).all()
        torch.autograd.gradcheck(lambda t: translate(t, d), (x.detach().requires_grad_(),))


class TestCropPatches:
    def test_integer_positions_are_slices(self) -> None:
        """A pattern at (x, y) covers object rows y − N/2 … y + N/2 − 1 (the FFT-centre convention)."""
        obj = randc(40, 50)
        patches = crop_patches(obj, torch.tensor([20.0, 33.0]), torch.tensor([16.0, 22.0]), 16)
        torch.testing.assert_close(patches[0], obj[8:24, 12:28], rtol=0, atol=0)
        torch.testing.assert_close(patches[1], obj[14:30, 25:41], rtol=0, atol=0)

    def test_outside_reads_zero(self) -> None:
        """Window pixels beyond the object's edge are zero."""
        obj = torch.ones(20, 20, dtype=torch.complex64)
        patch = crop_patches(obj, torch.tensor([2.0]), torch.tensor([10.0]), 8)[0]
        assert float(patch[:, :2].abs().sum()) == 0
        assert float(patch[:, 2:].abs().min()) == 1

    def test_subpixel_position_interpolates(self) -> None:
        """A position 0.25 px right reads 3/4 of each pixel and 1/4 of its right neighbour."""
        obj = randc(30, 30, dtype=torch.complex128)
        base = crop_patches(obj, torch.tensor([15.0]), torch.tensor([15.0]), 8)[0]
        right = crop_patches(obj, torch.tensor([16.0]), torch.tensor([15.0]), 8)[0]
        quarter = crop_patches(obj, torch.tensor([15.25]), torch.tensor([15.0]), 8)[0]
        torch.testing.assert_close(quarter, 0.75 * base + 0.25 * right)

    def test_far_outside_raises(self) -> None:
        """A window entirely off the padded object is a caller error."""
        with pytest.raises(ValueError, match="outside"):
            crop_patches(
                torch.ones(10, 10, dtype=torch.complex64),
                torch.tensor([100.0]),
                torch.tensor([5.0]),
                8,
            )


def group_of(
    obj: torch.Tensor, centre: tuple[float, float], offsets: list[tuple[float, float]], n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches of ``obj`` at centre + offsets (x, y) and their relative coordinates −offsets."""
    xy = torch.tensor([[centre[0] + dx, centre[1] + dy] for dx, dy in offsets], dtype=torch.float64)
    patches = crop_patches(obj, xy[:, 0], xy[:, 1], n)[None]
    relative = -(xy - xy.mean(0))[None]
    return patches, relative


class TestMergeExtract:
    def test_extract_of_merge_is_identity_on_consistent_patches(self) -> None:
        """Patches cut from one object at integer offsets come back unchanged on their centres."""
        obj = randc(64, 64, dtype=torch.complex128)
        patches, rel = group_of(obj, (32.0, 32.0), [(-4, -4), (4, -4), (-4, 4), (4, 4)], 32)
        again = extract_patches(merge_patches(patches, rel), rel, 32)
        box = central_box(32).bool()
        torch.testing.assert_close(again[..., box], patches[..., box], rtol=1e-12, atol=1e-12)

    def test_subpixel_offsets_nearly_identity(self) -> None:
        """With sub-pixel offsets a smooth object survives merge∘extract to interpolation accuracy."""
        obj = smooth_object(96, seed=2)
        patches, rel = group_of(
            obj, (48.0, 48.0), [(-3.5, -2.25), (3.5, -2.25), (-3.5, 2.25), (3.5, 2.25)], 32
        )
        again = extract_patches(merge_patches(patches, rel), rel, 32)
        inner = torch.zeros(32, 32, dtype=torch.bool)
        inner[10:22, 10:22] = True
        assert float((again - patches)[..., inner].abs().max()) < 0.02 * float(patches.abs().max())

    def test_canvas_places_patches_around_the_centre(self) -> None:
        """Merging shifts each patch by −relative: the canvas is the object around the group centre."""
        obj = randc(64, 64, dtype=torch.complex128)
        patches, rel = group_of(obj, (32.0, 32.0), [(-3, 0), (3, 0)], 32)
        canvas = merge_patches(patches, rel)[0]
        # canvas pixel (r, c) is object pixel (32 − M/2 + r, 32 − M/2 + c); the left patch's box
        # covers object columns 21 … 36, the right one 27 … 42, both rows 24 … 39
        m = canvas.shape[-1]
        assert m == 32  # the boxes fit without padding
        top = 32 - m // 2
        torch.testing.assert_close(
            canvas[24 - top : 40 - top, 21 - top : 43 - top], obj[24:40, 21:43]
        )

    def test_a_window_keeps_every_weighted_pixel(self) -> None:
        """With a window positive everywhere, merge∘extract returns consistent patches whole,
        beyond the central box, and the canvas grows to hold every shifted window."""
        obj = randc(96, 96, dtype=torch.complex128)
        patches, rel = group_of(obj, (48.0, 48.0), [(-3, -3), (3, -3), (-3, 3), (3, 3)], 32)
        window = torch.linspace(0.1, 1.0, 32)[:, None] * torch.ones(32)
        canvas = merge_patches(patches, rel, window.double())
        assert canvas.shape[-1] == 32 + 2 * (3 + 1)
        again = extract_patches(canvas, rel, 32)
        torch.testing.assert_close(again, patches, rtol=1e-12, atol=1e-12)

    def test_the_box_loses_a_wide_probes_light(self) -> None:
        """The far field of a group through merge∘extract: weighted by a wide probe's intensity
        it is the patterns' own; weighted by the central box it loses the light outside the
        boxes (the loss that drove the PINN's phase-ramp bias)."""
        n = 32
        obj = smooth_object(96, seed=3).to(torch.complex128)
        patches, rel = group_of(obj, (48.0, 48.0), [(-3, -3), (3, -3), (-3, 3), (3, 3)], n)
        r = torch.arange(n, dtype=torch.float64) - n / 2
        probe = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 8.0**2)).to(torch.complex128)
        lit = probe.abs() ** 2
        assert float((lit * central_box(n, dtype=torch.float64)).sum() / lit.sum()) < 0.75

        def error(window: torch.Tensor | None) -> float:
            seen = extract_patches(merge_patches(patches, rel, window), rel, n)
            far = torch.fft.fft2(seen * probe).abs()
            return float((far - torch.fft.fft2(patches * probe).abs()).norm() / far.norm())

        assert error(lit / lit.max()) < 1e-6
        assert error(None) > 0.05

    def test_far_apart_patches_grow_the_canvas(self) -> None:
        """Offsets beyond N/4 pad the canvas so no box is cut: merge∘extract stays the identity."""
        obj = randc(96, 96, dtype=torch.complex128)
        patches, rel = group_of(obj, (48.0, 48.0), [(-12, -3), (12, 3)], 32)
        canvas = merge_patches(patches, rel)
        assert canvas.shape[-1] == 32 + 2 * (12 + 1 - 8)
        box = central_box(32).bool()
        again = extract_patches(canvas, rel, 32)
        torch.testing.assert_close(again[..., box], patches[..., box], rtol=1e-12, atol=1e-12)

    def test_uncovered_canvas_is_zero_and_periphery_not_amplified(self) -> None:
        """Pixels outside every central box are 0; inside, values stay within the patches' range."""
        patches = randc(1, 4, 32, 32, dtype=torch.complex128) * 1000
        patches[..., 8:24, 8:24] = 1.0
        rel = torch.tensor(
            [[[2.5, 2.5], [-2.5, 2.5], [2.5, -2.5], [-2.5, -2.5]]], dtype=torch.float64
        )
        canvas = merge_patches(patches, rel)[0]
        assert float(canvas.abs().max()) <= 1.0 + 1e-9
        assert float(canvas[:4].abs().max()) == 0

    def test_gradients_finite(self) -> None:
        """Backpropagation through merge and extract gives finite gradients."""
        patches = randc(2, 4, 32, 32).requires_grad_()
        rel = torch.tensor([[1.5, -0.5], [-1.5, 0.5], [0.25, 2.0], [-0.25, -2.0]]).expand(2, 4, 2)
        extract_patches(merge_patches(patches, rel), rel, 32).abs().sum().backward()
        assert torch.isfinite(torch.view_as_real(patches.grad)).all()
        assert float(patches.grad.abs().sum()) > 0

    def test_float32_matches_float64(self) -> None:
        """Single and double precision agree."""
        patches = randc(1, 4, 32, 32, dtype=torch.complex128)
        rel = torch.tensor(
            [[[1.5, -0.5], [-1.5, 0.5], [0.25, 2.0], [-0.25, -2.0]]], dtype=torch.float64
        )
        hi = extract_patches(merge_patches(patches, rel), rel, 32)
        lo = extract_patches(
            merge_patches(patches.to(torch.complex64), rel.float()), rel.float(), 32
        )
        torch.testing.assert_close(lo.to(torch.complex128), hi, rtol=1e-5, atol=1e-5)
