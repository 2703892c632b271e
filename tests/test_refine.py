"""The physics refinement: its operators, its update steps, and convergence on tiny scans."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from runspec import write_spec

from ptycho_spec.cli import main
from ptycho_spec.lock import read_lock
from runner.data.scan import Scan
from runner.data.simulate import disk_probe
from runner.infer.reconstruct import Reconstruction
from runner.physics.probe import normalize_probe
from runner.physics.propagate import far_field, far_field_inverse
from runner.physics.shift import crop_patches
from runner.refine import engine
from runner.refine.engine import (
    MAX_POSITION_STEP_PX,
    STEP_FLOOR,
    Measurements,
    amplitude_correction,
    move_phase_ramp,
    photons_per_unit,
    position_steps,
    refine,
    step_scale,
)
from runner.refine.operators import extract, extract_adjoint, extract_gradient, windows
from runner.refine.stage import calibrate_probe, starting_object
from runner.train.bundle import read_bundle

N = 16


def smooth_object(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """A smooth random complex object ``(H, W)`` complex128: amplitude 0.6–1, phase ±1 rad."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    k = torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2
    low = torch.exp(-k / 0.004)

    def field() -> torch.Tensor:
        noise = torch.randn(h, w, generator=g, dtype=torch.float64)
        f = torch.fft.ifft2(torch.fft.fft2(noise) * low).real
        return (f - f.mean()) / f.std()

    return (0.8 + 0.1 * field()) * torch.exp(0.5j * field())


def gaussian_probe(n: int, sigma: float) -> torch.Tensor:
    """A Gaussian probe with a quadratic phase ``(n, n)`` complex128."""
    t = torch.arange(n, dtype=torch.float64) - n / 2
    r2 = t[:, None] ** 2 + t[None, :] ** 2
    return torch.exp(-r2 / (2 * sigma**2)) * torch.exp(0.02j * r2)


def raster(size: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    corners = torch.arange(0, size - N + 1, step, dtype=torch.float64) + N / 2
    yy, xx = torch.meshgrid(corners, corners, indexing="ij")
    return xx.reshape(-1), yy.reshape(-1)


def measure(
    obj: torch.Tensor, probe: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    return far_field(crop_patches(obj, x, y, N) * probe).abs()


def aligned_error(
    estimate: torch.Tensor, truth: torch.Tensor, region: tuple[slice, slice]
) -> float:
    """Relative error of ``estimate`` on ``region`` after the best global complex factor."""
    a, b = estimate[region], truth[region]
    gain = (a.conj() * b).sum() / (a.abs() ** 2).sum()
    return float((gain * a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def scan() -> dict[str, torch.Tensor]:
    """A noiseless raster scan of a smooth 40 × 40 object, step 3 px (64 patterns)."""
    obj = smooth_object((40, 40), seed=1)
    probe = gaussian_probe(N, 3.0)
    x, y = raster(40, 3)
    return {"obj": obj, "probe": probe, "x": x, "y": y, "amp": measure(obj, probe, x, y)}


CENTRE = (slice(10, 30), slice(10, 30))


class TestOperators:
    def test_extract_is_crop_patches(self) -> None:
        """Extraction at sub-pixel positions equals the simulator's ``crop_patches``."""
        obj = smooth_object((30, 34), seed=2)
        x = torch.tensor([10.3, 17.0, 20.75], dtype=torch.float64)
        y = torch.tensor([12.5, 9.9, 18.0], dtype=torch.float64)
        got = extract(obj, windows(x, y, N))
        torch.testing.assert_close(got, crop_patches(obj, x, y, N), rtol=0, atol=1e-12)

    def test_adjoint(self) -> None:
        """⟨extract(O), v⟩ = ⟨O, extractᵀ(v)⟩ for random O and v."""
        g = torch.Generator().manual_seed(0)
        obj = torch.randn(30, 30, generator=g, dtype=torch.complex128)
        v = torch.randn(4, N, N, generator=g, dtype=torch.complex128)
        win = windows(
            torch.rand(4, generator=g, dtype=torch.float64) * 8 + 10,
            torch.rand(4, generator=g, dtype=torch.float64) * 8 + 10,
            N,
        )
        lhs = (extract(obj, win).conj() * v).sum()
        rhs = (obj.conj() * extract_adjoint(v, win, (30, 30))).sum()
        assert abs(lhs - rhs) < 1e-10 * abs(lhs)

    def test_gradient_is_the_derivative(self) -> None:
        """∂patch/∂x and ∂patch/∂y match finite differences of the extraction."""
        obj = smooth_object((30, 30), seed=3)
        x = torch.tensor([14.3], dtype=torch.float64)
        y = torch.tensor([15.6], dtype=torch.float64)
        dx, dy = extract_gradient(obj, windows(x, y, N))
        h = 1e-6
        base = extract(obj, windows(x, y, N))
        torch.testing.assert_close(
            dx, (extract(obj, windows(x + h, y, N)) - base) / h, atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            dy, (extract(obj, windows(x, y + h, N)) - base) / h, atol=1e-5, rtol=0
        )

    def test_far_field_inverse(self) -> None:
        """``far_field_inverse`` undoes ``far_field``."""
        psi = torch.randn(3, N, N, dtype=torch.complex128)
        torch.testing.assert_close(far_field_inverse(far_field(psi)), psi)


class TestAmplitudeCorrection:
    def test_zero_at_a_consistent_exit_wave(self) -> None:
        """An exit wave whose far-field amplitude is the measurement needs no correction."""
        psi = torch.randn(2, N, N, dtype=torch.complex128)
        chi = amplitude_correction(psi, far_field(psi).abs(), None)
        assert float(chi.abs().max()) < 1e-12

    def test_projects_onto_the_measurement(self) -> None:
        """ψ + χ has the measured far-field amplitude and the model's far-field phase."""
        g = torch.Generator().manual_seed(4)
        psi = torch.randn(2, N, N, generator=g, dtype=torch.complex128)
        measured = torch.rand(2, N, N, generator=g, dtype=torch.float64)
        target = far_field(psi + amplitude_correction(psi, measured, None))
        torch.testing.assert_close(target.abs(), measured)
        torch.testing.assert_close(torch.angle(target), torch.angle(far_field(psi)))

    def test_bad_pixels_keep_the_model(self) -> None:
        """Outside the valid mask the far field stays the model's."""
        psi = torch.randn(1, N, N, dtype=torch.complex128)
        valid = torch.ones(N, N, dtype=torch.bool)
        valid[3, 5] = False
        target = far_field(psi + amplitude_correction(psi, torch.zeros(1, N, N), valid))
        torch.testing.assert_close(target[0, 3, 5], far_field(psi)[0, 3, 5])
        assert float(target.abs()[0][valid].max()) < 1e-12


class TestPositionSteps:
    def test_recovers_a_small_shift(self, scan: dict[str, torch.Tensor]) -> None:
        """The exit-wave change caused by a 0.2 px move is explained by a step of ≈ 0.2 px."""
        obj, probe = scan["obj"], scan["probe"]
        x, y = torch.tensor([20.0], dtype=torch.float64), torch.tensor([19.5], dtype=torch.float64)
        win = windows(x, y, N)
        chi = (extract(obj, windows(x + 0.2, y - 0.1, N)) - extract(obj, win)) * probe
        dx, dy = extract_gradient(obj, win)
        step = position_steps(dx, dy, probe, chi)
        torch.testing.assert_close(
            step[:, 0], torch.tensor([0.2, -0.1], dtype=torch.float64), atol=0.03, rtol=0
        )

    def test_steps_are_bounded(self, scan: dict[str, torch.Tensor]) -> None:
        """A correction no small move explains moves a position by at most the bound."""
        probe = scan["probe"]
        dx = torch.full((1, N, N), 1e-3, dtype=torch.complex128)
        step = position_steps(dx, dx, probe, probe[None] * 5)
        assert float(step.abs().max()) <= MAX_POSITION_STEP_PX


def run_refine(scan: dict[str, torch.Tensor], **kwargs: object) -> object:
    options = {
        "iterations": 30,
        "batch_size": 8,
        "update_probe": False,
        "update_positions": False,
        "seed": 0,
    } | kwargs
    obj0 = options.pop("obj0", torch.full((40, 40), 0.8 + 0j, dtype=torch.complex128))
    probe0 = options.pop("probe0", scan["probe"])
    x0 = options.pop("x0", scan["x"])
    y0 = options.pop("y0", scan["y"])
    data = Measurements(amplitude=scan["amp"], valid=None, photons_per_unit=1e4)
    return refine(obj0, probe0, x0, y0, data, **options)


class TestRefine:
    def test_converges_to_the_truth(self, scan: dict[str, torch.Tensor]) -> None:
        """From a flat object with the true probe, the object converges to the truth (up to a
        global complex factor) and the NLL falls."""
        result = run_refine(scan)
        assert aligned_error(result.object, scan["obj"], CENTRE) < 0.02
        assert result.nll[-1] < 0.1 * result.nll[0]

    def test_probe_scale_is_fitted(self, scan: dict[str, torch.Tensor]) -> None:
        """A probe 7× too bright is scaled back before the first update."""
        result = run_refine(scan, probe0=7 * scan["probe"], iterations=1)
        assert abs(result.probe_scale * 7 * 0.8 - 1) < 0.3  # the flat 0.8 object absorbs the rest

    def test_probe_refinement_recovers_a_wrong_probe(self, scan: dict[str, torch.Tensor]) -> None:
        """Starting from a wider probe without its phase, refining the probe fits the data far
        better than keeping it, and the object comes closer to the truth."""
        wrong = gaussian_probe(N, 4.0).abs().to(torch.complex128)
        fixed = run_refine(scan, probe0=wrong, iterations=40)
        refined = run_refine(scan, probe0=wrong, iterations=40, update_probe=True)
        assert refined.nll[-1] < 0.5 * fixed.nll[-1]
        assert aligned_error(refined.object, scan["obj"], CENTRE) < 0.5 * aligned_error(
            fixed.object, scan["obj"], CENTRE
        )

    def test_position_refinement_reduces_position_error(
        self, scan: dict[str, torch.Tensor]
    ) -> None:
        """Positions off by up to ±0.8 px move back toward the truth (mean error 0.53 → 0.25 px
        in 40 passes; the object absorbs part of the error, so it does not fall to 0)."""
        g = torch.Generator().manual_seed(5)
        jitter = (torch.rand(2, len(scan["x"]), generator=g, dtype=torch.float64) - 0.5) * 1.6
        jitter -= jitter.mean(dim=1, keepdim=True)
        x0, y0 = scan["x"] + jitter[0], scan["y"] + jitter[1]
        result = run_refine(scan, x0=x0, y0=y0, iterations=40, update_positions=True)
        before = torch.hypot(x0 - scan["x"], y0 - scan["y"]).mean()
        after = torch.hypot(result.x_px - scan["x"], result.y_px - scan["y"]).mean()
        assert after < 0.55 * before

    def test_reproducible(self, scan: dict[str, torch.Tensor]) -> None:
        """The same seed gives the same bits; another seed another minibatch order."""
        a, b = run_refine(scan, iterations=3), run_refine(scan, iterations=3)
        c = run_refine(scan, iterations=3, seed=1)
        assert torch.equal(a.object, b.object) and a.nll == b.nll
        # another order takes other steps, not just other last bits
        assert (a.object - c.object).abs().max() > 1e-4 * a.object.abs().max()

    def test_shrinking_steps_average_the_noise(
        self, scan: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On Poisson-noisy patterns (100 photons each) the shrinking steps of the second half
        end closer to the truth than constant steps, which keep the last minibatches' noise."""
        q = 100 / float((scan["amp"] ** 2).sum(dim=(-2, -1)).mean())
        g = torch.Generator().manual_seed(3)
        noisy = scan | {"amp": (torch.poisson(q * scan["amp"] ** 2, generator=g) / q).sqrt()}
        shrinking = aligned_error(run_refine(noisy).object, scan["obj"], CENTRE)
        monkeypatch.setattr(engine, "step_scale", lambda iteration, iterations: 1.0)
        constant = aligned_error(run_refine(noisy).object, scan["obj"], CENTRE)
        assert shrinking < 0.75 * constant

    def test_zero_iterations_keep_the_start(self, scan: dict[str, torch.Tensor]) -> None:
        """No iteration: the object is the start, the NLL is evaluated once."""
        obj0 = smooth_object((40, 40), seed=9)
        result = run_refine(scan, obj0=obj0, iterations=0)
        assert torch.equal(result.object, obj0) and len(result.nll) == 1


def test_step_scale() -> None:
    """Full steps for the first half, then a strictly shrinking factor that approaches the
    floor; a single pass takes the full step."""
    scales = [step_scale(i, 10) for i in range(10)]
    assert scales[:6] == [1.0] * 6
    assert all(a > b for a, b in itertools.pairwise(scales[5:]))
    assert STEP_FLOOR < scales[-1] < 3 * STEP_FLOOR
    assert STEP_FLOOR < step_scale(99, 100) < 1.05 * STEP_FLOOR
    assert step_scale(0, 1) == 1.0


def test_starting_object_keeps_the_lit_pixels() -> None:
    """The PINN's values stay where its stitch weight reaches a tenth of the largest; dimmer
    and uncovered pixels take the lit pixels' mean amplitude with phase 0."""
    obj = np.full((4, 4), 2j, np.complex64)
    obj[0] = 3 * np.exp(1j)  # a saturated edge row, barely covered
    obj[1, 0] = 4  # lit
    weight = np.full((4, 4), 10.0, np.float32)
    weight[0] = 0.5
    weight[3, 3] = 0
    rec = Reconstruction(
        obj=obj, weight=weight, x_px=np.zeros(1), y_px=np.zeros(1), truth=None, input_scale=1.0
    )
    start = starting_object(rec)
    lit_mean = (4 + 2 * 10) / 11
    assert start[1, 0] == 4 and start[2, 2] == 2j
    np.testing.assert_allclose(start[0], lit_mean, rtol=1e-6)
    np.testing.assert_allclose(start[3, 3], lit_mean, rtol=1e-6)


class TestMovePhaseRamp:
    def test_ramp_moves_to_the_probe_and_the_fit_stays(self, scan: dict[str, torch.Tensor]) -> None:
        """An object phase ramp moves into the probe: the object's mean phase gradient becomes
        ~0, and every far-field amplitude stays what it was."""
        rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
        ramped = scan["obj"] * torch.exp(1j * (0.3 * cols - 0.2 * rows))
        inside = (scan["x"] < 31) & (scan["y"] < 31)  # windows of N + 1 px within the object
        win = windows(scan["x"][inside], scan["y"][inside], N)
        before = far_field(extract(ramped, win) * scan["probe"]).abs()
        obj, probe = move_phase_ramp(ramped, scan["probe"], torch.ones(40, 40))
        after = far_field(extract(obj, win) * probe).abs()
        torch.testing.assert_close(after, before, atol=1e-3 * float(before.max()), rtol=0)
        gradient = torch.angle((obj[:, 1:] * obj[:, :-1].conj()).sum())
        assert abs(float(gradient)) < 0.02


class TestPhotonsPerUnit:
    def test_mean_photons(self) -> None:
        """q·mean Σ X² equals the photons per pattern."""
        amp = np.random.default_rng(0).random((5, 4, 4))
        q = photons_per_unit(amp, 1e6)
        assert abs(q * np.mean(np.sum(amp**2, axis=(1, 2))) - 1e6) < 1e-3


class TestStage:
    def test_train_infer_with_refinement(self, tmp_path: Path) -> None:
        """A run with ``refine.iterations`` keeps the PINN's object beside the refined one,
        scores both, plots the NLL, and refines toward the truth."""
        spec = write_spec(
            tmp_path, extra="[refine]\niterations = 8\nprobe = true\nbatch_size = 4\n"
        )
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 0
        run = tmp_path / "run"
        assert (run / "refine.png").is_file()
        metrics = json.loads((run / "metrics.json").read_text())
        nll = metrics["refine"]["nll_per_iteration"]
        assert len(nll) == 9 and nll[-1] < nll[0]
        assert (
            metrics["reconstruction"]["amplitude"]["ssim"]
            > metrics["pinn_reconstruction"]["amplitude"]["ssim"]
        )
        with np.load(run / "reconstruction.npz") as rec:
            assert {"object", "pinn_object", "pinn_weight", "probe"} <= set(rec.files)
            assert rec["probe"].shape == (64, 64)
            assert not np.array_equal(rec["object"], rec["pinn_object"])


class TestCalibrateProbe:
    def test_recovers_a_wrong_probe(self, scan: dict[str, torch.Tensor], tmp_path: Path) -> None:
        """From a flat object, calibration takes a wider probe without its phase most of the
        way to the true one, and the NLL falls."""
        spec = write_spec(tmp_path)
        assert main(["compile", str(spec), "--out", str(tmp_path / "run.lock.toml")]) == 0
        c = read_lock(tmp_path / "run.lock.toml").resolved.canonical
        amp = scan["amp"].numpy().astype(np.float32)
        photons = 1e4 * float(np.square(amp, dtype=np.float64).sum(axis=(1, 2)).mean())
        c = attrs.evolve(
            c,
            training=attrs.evolve(c.training, calibrate_probe=40, nphotons=photons),
            refine=attrs.evolve(c.refine, batch_size=8),
        )
        wrong = Scan(
            amplitude=amp,
            x_px=scan["x"].numpy(),
            y_px=scan["y"].numpy(),
            probe=gaussian_probe(N, 4.0).abs().numpy().astype(np.complex64),
        )
        found = calibrate_probe(
            wrong, c=c, device=torch.device("cpu"), precision="32-true", progress=False
        )
        whole = (slice(None), slice(None))

        def error(probe: np.ndarray) -> float:
            return aligned_error(torch.from_numpy(probe).to(torch.complex128), scan["probe"], whole)

        assert error(found.probe) < 0.4 * error(wrong.probe)  # measured: 0.27
        nll = found.record["nll_per_iteration"]
        assert nll[-1] < 0.1 * nll[0]


def infer_with(bundle: Path, folder: Path) -> Path:
    """An inference spec on the tiny runs' test scan, refining one pass with the probe free."""
    spec = folder / "infer.toml"
    spec.write_text(
        'spec_version = 1\n[run]\ntask = "infer"\nseed = 3\n'
        '[data]\nsource = "simulate"\n'
        "[data.simulate]\nobject_size = 80\nscan_step_test = 8\nnphotons = 1e6\n"
        f'[inference]\nbundle = "{bundle}"\nbatch_size = 4\n'
        "[refine]\niterations = 1\nprobe = true\n"
        '[execution]\naccelerator = "cpu"\nenable_progress_bar = false\n'
    )
    return spec


class TestCalibratedRun:
    def test_trains_with_the_calibrated_probe(self, tmp_path: Path) -> None:
        """``training.calibrate_probe`` records its NLL and time, the network trains with (and
        its bundle keeps) a probe other than the data's, and an ``infer`` run with the bundle
        refines from the bundle's probe, not the data's."""
        spec = write_spec(tmp_path, task="train")
        out = tmp_path / "run"
        assert main(["run", str(spec), "--out", str(out), "--set=training.calibrate_probe=6"]) == 0
        nll = json.loads((out / "metrics.json").read_text())["calibrate_probe"]["nll_per_iteration"]
        assert len(nll) == 7 and nll[-1] < nll[0]
        assert "calibrate_time_s" in (out / "timing.toml").read_text()
        c = read_lock(out / "run.lock.toml").resolved.canonical
        kept = torch.view_as_complex(read_bundle(out / "model.bundle").state_dict["probe_ri"])
        data_probe = torch.from_numpy(disk_probe(64)).to(torch.complex64)
        assert not torch.allclose(kept, normalize_probe(data_probe, c.model.probe_scale, None))

        inferred = tmp_path / "infer"
        assert (
            main(["run", str(infer_with(out / "model.bundle", tmp_path)), "--out", str(inferred)])
            == 0
        )
        with np.load(inferred / "reconstruction.npz") as rec:
            start = torch.from_numpy(rec["probe"]).to(torch.complex128)  # one pass: not yet moved
        whole = (slice(None), slice(None))
        to_kept = aligned_error(start, kept.to(torch.complex128), whole)
        # measured 0.054 against 0.14; from the data's probe it would be the other way round
        assert to_kept < 0.6 * aligned_error(start, data_probe.to(torch.complex128), whole)
