"""A test-only re-implementation of the released DTTNet with the official module nesting.

junyuchen-cjy/DTTNet-Pytorch cannot be installed here (it needs pytorch-lightning, hydra, ...), so
this module rebuilds its network from a reading of ``src/dp_tdf/dp_tdf_net.py``,
``src/dp_tdf/modules.py`` (``TFC``, ``TFC_TDF_Res2``), ``src/dp_tdf/bandsequence.py``
(``RNNModule``, ``BandSequenceModelModule``), ``src/dp_tdf/abstract.py`` (``stft``/``istft``, the
``window`` and ``freq_pad`` parameters) and ``src/evaluation/separate.py``
(``no_overlap_inference``). Attribute names and nesting follow those files, so ``state_dict()`` has
the official key layout (``first_conv.0.weight``, ``encoding_blocks.0.tfc1.H.0.1.running_mean``,
``bottleneck_block2.bsrnn.0.1.rnn.weight_hh_l0_reverse``, ...). It is written independently in the
style of this test suite and is used only to produce checkpoints and expected outputs.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU())


class ReferenceTFC(nn.Module):
    def __init__(self, c_in: int, c_out: int, l: int, k: int) -> None:  # noqa: E741 - official name
        super().__init__()
        self.H = nn.ModuleList(
            _conv_bn_relu(nn.Conv2d(c_in if i == 0 else c_out, c_out, k, stride=1, padding=k // 2), c_out)
            for i in range(l)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.H:
            x = layer(x)
        return x


class ReferenceTFCTDFRes2(nn.Module):
    def __init__(self, c: int, l: int, f: int, k: int, bn: int, bias: bool) -> None:  # noqa: E741
        super().__init__()
        self.tfc1 = ReferenceTFC(c, c, l, k)
        self.tfc2 = ReferenceTFC(c, c, l, k)
        self.res = ReferenceTFC(c, c, 1, k)
        if bn == 0:
            self.tdf = nn.Sequential(nn.Linear(f, f, bias=bias), nn.BatchNorm2d(c), nn.ReLU())
        else:
            self.tdf = nn.Sequential(
                nn.Linear(f, f // bn, bias=bias),
                nn.BatchNorm2d(c),
                nn.ReLU(),
                nn.Linear(f // bn, f, bias=bias),
                nn.BatchNorm2d(c),
                nn.ReLU(),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.res(x)
        x = self.tfc1(x)
        x = x + self.tdf(x)
        x = self.tfc2(x)
        return x + shortcut


class ReferenceRNNModule(nn.Module):
    def __init__(self, groups: int, features: int, hidden: int, rnn_type: str, bidirectional: bool) -> None:
        super().__init__()
        self.groupnorm = nn.GroupNorm(groups, features)
        self.rnn = getattr(nn, rnn_type)(features, hidden, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * 2 if bidirectional else hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, t, n = x.shape
        out = x.reshape(b * k, t, n)
        out = self.groupnorm(out.transpose(-1, -2)).transpose(-1, -2)
        out = self.fc(self.rnn(out)[0])
        x = out.reshape(b, k, t, n) + x
        return x.permute(0, 2, 1, 3).contiguous()


class ReferenceBandSequence(nn.Module):
    def __init__(
        self,
        input_dim_size: int,
        hidden_dim_size: int,
        rnn_type: str,
        bidirectional: bool,
        num_layers: int,
        n_heads: int,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        features, hidden = input_dim_size // n_heads, hidden_dim_size // n_heads
        groups = features // 16
        self.bsrnn = nn.ModuleList(
            nn.Sequential(
                ReferenceRNNModule(groups, features, hidden, rnn_type, bidirectional),
                ReferenceRNNModule(groups, features, hidden, rnn_type, bidirectional),
            )
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        x = x.reshape(b * self.n_heads, c // self.n_heads, t, f).permute(0, 3, 2, 1).contiguous()
        for layer in self.bsrnn:
            x = layer(x)
        return x.permute(0, 3, 2, 1).contiguous().reshape(b, c, t, f)


class ReferenceDPTDFNet(nn.Module):
    """``DPTDFNet`` (block_type ``TFC_TDF_Res2``) with the ``AbstractModel`` spectral front/back ends."""

    def __init__(
        self,
        *,
        audio_ch: int = 2,
        n_fft: int = 6144,
        hop_length: int = 1024,
        dim_f: int = 2048,
        dim_t: int = 256,
        overlap: int = 3072,
        num_blocks: int = 5,
        l: int = 3,  # noqa: E741 - the release's name
        g: int = 32,
        k: int = 3,
        bn: int = 8,
        bias: bool = False,
        rnn_type: str = "LSTM",
        bidirectional: bool = True,
        num_layers: int = 4,
        n_heads: int = 2,
    ) -> None:
        super().__init__()
        self.audio_ch, self.n_fft, self.hop_length, self.dim_f = audio_ch, n_fft, hop_length, dim_f
        self.n_bins = n_fft // 2 + 1
        self.chunk_size = hop_length * (dim_t - 1)
        self.overlap = overlap
        self.window = nn.Parameter(torch.hann_window(n_fft, periodic=True), requires_grad=False)
        self.freq_pad = nn.Parameter(
            torch.zeros(1, 2 * audio_ch, self.n_bins - dim_f, 1), requires_grad=False
        )
        self.n = num_blocks // 2
        self.first_conv = _conv_bn_relu(nn.Conv2d(2 * audio_ch, g, 1), g)
        f, c = dim_f, g
        self.encoding_blocks, self.ds = nn.ModuleList(), nn.ModuleList()
        for _ in range(self.n):
            self.encoding_blocks.append(ReferenceTFCTDFRes2(c, l, f, k, bn, bias))
            self.ds.append(_conv_bn_relu(nn.Conv2d(c, c + g, 2, stride=2), c + g))
            f, c = f // 2, c + g
        self.bottleneck_block1 = ReferenceTFCTDFRes2(c, l, f, k, bn, bias)
        self.bottleneck_block2 = ReferenceBandSequence(c, 2 * c, rnn_type, bidirectional, num_layers, n_heads)
        self.decoding_blocks, self.us = nn.ModuleList(), nn.ModuleList()
        for _ in range(self.n):
            self.us.append(_conv_bn_relu(nn.ConvTranspose2d(c, c - g, 2, stride=2), c - g))
            f, c = f * 2, c - g
            self.decoding_blocks.append(ReferenceTFCTDFRes2(c, l, f, k, bn, bias))
        self.final_conv = nn.Sequential(nn.Conv2d(c, 2 * audio_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x).transpose(-1, -2)
        skips = []
        for i in range(self.n):
            x = self.encoding_blocks[i](x)
            skips.append(x)
            x = self.ds[i](x)
        x = self.bottleneck_block2(self.bottleneck_block1(x))
        for i in range(self.n):
            x = self.us[i](x) * skips[-i - 1]
            x = self.decoding_blocks[i](x)
        return self.final_conv(x.transpose(-1, -2))

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = x.reshape(b * self.audio_ch, -1)
        spec = torch.stft(
            x, self.n_fft, self.hop_length, window=self.window, center=True, return_complex=True
        )
        spec = torch.view_as_real(spec).permute(0, 3, 1, 2)  # (b c) 2 bins t
        spec = spec.reshape(b, self.audio_ch * 2, self.n_bins, -1)
        return spec[:, :, : self.dim_f]

    def istft(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = torch.cat([x, self.freq_pad.repeat(b, 1, 1, x.shape[-1])], -2)
        x = x.reshape(b * self.audio_ch, 2, self.n_bins, -1).permute(0, 2, 3, 1).contiguous()
        x = torch.istft(
            torch.view_as_complex(x), self.n_fft, self.hop_length, window=self.window, center=True
        )
        return x.reshape(b, self.audio_ch, -1)

    @torch.no_grad()
    def no_overlap_inference(self, mix: torch.Tensor) -> torch.Tensor:
        """The release's whole-track inference for one `(channels, time)` mixture."""
        true_samples = self.chunk_size - 2 * self.overlap
        length = mix.shape[-1]
        right_pad = true_samples + self.overlap - length % true_samples
        mixture = torch.cat(
            [mix.new_zeros(self.audio_ch, self.overlap), mix, mix.new_zeros(self.audio_ch, right_pad)], 1
        )
        num_chunks = mixture.shape[-1] // true_samples
        chunks = torch.stack(
            [mixture[:, i * true_samples : i * true_samples + self.chunk_size] for i in range(num_chunks)]
        )
        estimates = self.istft(self(self.stft(chunks)))[:, :, self.overlap : -self.overlap]
        return torch.cat(list(estimates), dim=-1)[:, :length]
