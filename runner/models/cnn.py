"""The PtychoPINN CNN generator (``ptycho/model.py``, TF; the normative architecture).

Encoder: per level Conv3×3-ReLU, Conv3×3-ReLU, MaxPool2 (no CBAM: the TF model has none and the
torch port's CBAM is what collapses N = 128 training). Two separate decoders, amplitude
and phase, each with per level Conv3×3-ReLU, Conv3×3-ReLU, nearest Upsample×2, ending at N/2,
then ``decoder_last``:

* ``pad_object``: path 1 = Conv3×3 on all channels but the last 4 → head activation → zero pad
  N/4 (the object lives on the central N/2 × N/2, Nyquist-sampled diffraction); path 2, only
  with ``probe_big`` = the last 4 channels → Conv-Up block → Conv3×3 → SiLU, kept on the outer
  N/4 border only; output = path 1 + path 2.
* not ``pad_object``: Conv-Up block on all channels → Conv3×3 → head activation, full N × N.

Head activations: amplitude per ``amp_activation``, phase π·tanh. Widths for n_filters_scale s:


| N   | encoder             | decoder            | last Conv-Up |
| 64  | s·[32, 64, 128]     | s·[64, 32]         | s·32         |
| 128 | s·[16, 32, 64, 128] | s·[128, 64, 32]    | s·16         |
| 256 | s·[8, …, 128]       | s·[256, …, 32]     | s·8          |

Weights start He-normal with zero biases, a head's output layer at zero (``_init``).

Every nearest Upsample×2 of the reference is followed by a 3×3 convolution; ``UpConv`` computes
that pair exactly from the low-resolution input (a 4-phase convolution and a pixel shuffle), so
no upsampled tensor is ever built. A Conv-Up block here therefore ends before its upsampling,
and the next convolution is an ``UpConv``: same parameters, same function, less memory traffic.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor, nn

from ptycho_spec.schema import Model

C_OUTER = 4  # channels feeding the border path (``create_decoder_last``: c_outer = 4)
AMP_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "silu": nn.SiLU, "softplus": nn.Softplus, "relu": nn.ReLU}


def _init(conv: nn.Conv2d, *, output: bool = False) -> nn.Conv2d:
    """He initialization for the ReLU layers, zeros for a head's output layer.

    The reference (Keras) uses Glorot, which halves the activation variance at every ReLU
    layer: after the ~12 layers to a head the features are ~1e-4 of the input, the heads see
    only their biases, and training sits on a flat object for hundreds of steps before it
    escapes (measured: loss stuck at 0.7× its start for 300 steps on the quickstart data,
    against 0.18× with this scheme). He keeps the variance; zero output weights start every
    head at its activation's centre (amplitude ½, phase 0) with full gradient to those weights.
    """
    if output:
        nn.init.zeros_(conv.weight)
    else:
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


def _conv(
    c_in: int, c_out: int, *, upsampled_input: bool = False, output: bool = False
) -> nn.Conv2d:
    """3×3 convolution, padding 1; an ``UpConv`` when its input is a pending upsample."""
    conv = (UpConv if upsampled_input else nn.Conv2d)(c_in, c_out, 3, padding=1)
    return _init(conv, output=output)


def conv_pool(c_in: int, c_out: int) -> nn.Sequential:
    """Conv-ReLU, Conv-ReLU, MaxPool2: ``(B, c_in, H, W)`` → ``(B, c_out, H/2, W/2)``.

    The second ReLU runs after the pooling: ReLU is monotonic, so max(relu(a), relu(b)) =
    relu(max(a, b)), and the activation then touches a quarter of the pixels.
    """
    return nn.Sequential(
        _conv(c_in, c_out),
        nn.ReLU(inplace=True),
        _conv(c_out, c_out),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
    )


# Which low-resolution row (offset −1, 0, +1) each 3×3 tap reads at output phase a = row mod 2
# of a nearest ×2 upsampled image: phase 0 reads rows i−1 (tap −1) and i (taps 0, +1); phase 1
# reads rows i (taps −1, 0) and i+1 (tap +1). Indexed [phase, low-res offset, tap].
PHASE_TAPS = (((1, 0, 0), (0, 1, 1), (0, 0, 0)), ((0, 0, 0), (1, 1, 0), (0, 0, 1)))


class UpConv(nn.Conv2d):
    """Conv3×3 (padding 1) of the nearest ×2 upsampled input, from the input itself:
    ``(B, c_in, H, W)`` → ``(B, c_out, 2H, 2W)``, equal to ``conv(upsample(x))``.

    Output pixel (2i + a, 2j + b) only sees input rows/columns i − 1 … i + 1, so the four
    phases (a, b) are one 3×3 convolution with 4·c_out outputs whose kernels are the original
    taps summed per input pixel, interleaved by ``pixel_shuffle``. Zero padding agrees because
    the upsampled image's padding row is the input's padding row.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, padding: int = 1) -> None:
        if (kernel_size, padding) != (3, 1):
            msg = "UpConv is a 3×3 convolution with padding 1"
            raise ValueError(msg)
        super().__init__(c_in, c_out, 3, padding=1)
        self.register_buffer(
            "taps", torch.tensor(PHASE_TAPS, dtype=torch.float32), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        taps = self.taps.to(self.weight.dtype)
        c_out, c_in = self.weight.shape[:2]
        phased = torch.einsum("apy,oiyx,bqx->oabipq", taps, self.weight, taps).reshape(
            4 * c_out, c_in, 3, 3
        )
        out = nn.functional.conv2d(x, phased, self.bias.repeat_interleave(4), padding=1)
        return nn.functional.pixel_shuffle(out, 2)


def conv_up(c_in: int, c_out: int, *, upsampled_input: bool) -> nn.Sequential:
    """Conv-ReLU, Conv-ReLU: the reference's Conv-Up block without its trailing Upsample×2,
    which the next layer (an ``UpConv``) applies. ``upsampled_input``: the block's input is
    itself a pending upsample, so its first convolution is an ``UpConv``."""
    return nn.Sequential(
        _conv(c_in, c_out, upsampled_input=upsampled_input),
        nn.ReLU(inplace=True),
        _conv(c_out, c_out),
        nn.ReLU(inplace=True),
    )


class ScaledTanh(nn.Module):
    """π·tanh: the phase head, bounded to (−π, π)."""

    def forward(self, x: Tensor) -> Tensor:
        return math.pi * torch.tanh(x)


def widths(N: int, scale: int) -> tuple[list[int], list[int], int]:
    """Encoder widths, decoder widths and the border path's width for patch side N."""
    levels = int(math.log2(N)) - 3  # the bottleneck is 8 × 8 for every N
    base = 2048 // N
    encoder = [scale * base * 2**i for i in range(levels)]
    decoder = [scale * 32 * 2**i for i in reversed(range(levels - 1))]
    return encoder, decoder, scale * base


class DecoderLast(nn.Module):
    """``create_decoder_last``: ``(B, c_in, N/4, N/4)``, pending an upsample to N/2 →
    ``(B, c_out, N, N)``."""

    def __init__(
        self,
        *,
        c_in: int,
        c_out: int,
        width: int,
        N: int,
        activation: nn.Module,
        pad_object: bool,
        probe_big: bool,
    ) -> None:
        super().__init__()
        self.pad_object, self.probe_big, self.pad = pad_object, probe_big, N // 4
        self.activation = activation
        self.centre = (
            _conv(c_in - C_OUTER, c_out, upsampled_input=True, output=True) if pad_object else None
        )
        if probe_big or not pad_object:
            block = conv_up(C_OUTER if pad_object else c_in, width, upsampled_input=True)
            self.border = nn.Sequential(
                block, _conv(width, c_out, upsampled_input=True, output=True)
            )
        border_mask = torch.ones(N, N)
        border_mask[self.pad : N - self.pad, self.pad : N - self.pad] = 0
        self.register_buffer("border_mask", border_mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.pad_object:
            return self.activation(self.border(x))
        p = self.pad
        out = nn.functional.pad(self.activation(self.centre(x[:, :-C_OUTER])), (p, p, p, p))
        if self.probe_big:
            out = out + nn.functional.silu(self.border(x[:, -C_OUTER:])) * self.border_mask
        return out


def decoder(*, model: Model, c_out: int, activation: nn.Module) -> nn.Sequential:
    """One head: Conv-Up levels from the bottleneck (8 × 8) to N/2, then ``DecoderLast``."""
    n = int(model.N)
    encoder, ladder, width = widths(n, model.n_filters_scale)
    chans = [encoder[-1], *ladder]
    levels = [conv_up(a, b, upsampled_input=i > 0) for i, (a, b) in enumerate(pairwise(chans))]
    last = DecoderLast(
        c_in=chans[-1],
        c_out=c_out,
        width=width,
        N=n,
        activation=activation,
        pad_object=model.pad_object,
        probe_big=model.probe_big,
    )
    return nn.Sequential(*levels, last)


class CNNGenerator(nn.Module):
    """Diffraction amplitudes ``(B, C_in, N, N)`` → object amplitude and phase, each
    ``(B, C_in, N, N)`` float; C_in = gridsize² with ``object_big``, else 1."""

    def __init__(self, *, model: Model) -> None:
        super().__init__()
        n, c = int(model.N), (model.gridsize**2 if model.object_big else 1)
        encoder, _, _ = widths(n, model.n_filters_scale)
        chans = [c, *encoder]
        self.encoder = nn.Sequential(*(conv_pool(a, b) for a, b in pairwise(chans)))
        self.amplitude = decoder(
            model=model, c_out=c, activation=AMP_ACTIVATIONS[model.amp_activation]()
        )
        self.phase = decoder(model=model, c_out=c, activation=ScaledTanh())
        # Channels-last activations and weights let oneDNN (CPU) and cuDNN run every convolution
        # without layout reorders: 1.4× faster training steps on CPU (benchmarks/RESULTS.md).
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        code = self.encoder(x.contiguous(memory_format=torch.channels_last))
        return self.amplitude(code), self.phase(code)


def build_cnn(*, model: Model) -> CNNGenerator:
    """The CNN generator for a resolved ``model`` section."""
    return CNNGenerator(model=model)
