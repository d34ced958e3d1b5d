"""Building blocks shared by the three Demucs models.

Module and parameter names follow the original implementation so that official state dicts load
key for key (``encoder.0.conv.weight``, ``encoder.0.dconv.layers.0.3.lstm.weight_ih_l0``, ...).
Only ``torch`` is imported: this file travels with the models as hub remote code.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# Attribute names set on sub-modules at construction and read by `init_demucs_module`.
RESCALE_ATTR = "_demucs_rescale"  # float: rescale reference of a convolution (the "rescale trick")
DECAY_ATTR = "_demucs_decay_query"  # bool: the decay query of `LocalState` (small init, bias -2)
EMBEDDING_ATTR = "_demucs_embedding"  # tuple describing how an embedding table is initialised

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def center_trim(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Keep the central ``length`` samples of the last axis (an odd excess is cut on the right)."""
    excess = tensor.shape[-1] - length
    if excess < 0:
        raise ValueError(f"cannot trim {tensor.shape[-1]} samples to {length}")
    if excess == 0:
        return tensor
    left = excess // 2
    return tensor[..., left : left + length]


def mark_rescaled_convolutions(module: nn.Module, reference: float) -> None:
    """Record that every convolution under ``module`` gets the rescale trick at initialisation."""
    if not reference:
        return
    for sub in module.modules():
        if isinstance(sub, CONV_TYPES):
            setattr(sub, RESCALE_ATTR, float(reference))


class LayerScale(nn.Module):
    """Per-channel residual scale, initialised to a small constant."""

    def __init__(self, channels: int, init: float = 0.0, channel_last: bool = False) -> None:
        super().__init__()
        self.channel_last = channel_last
        self.init_value = float(init)
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_last:
            return self.scale * x
        return self.scale[:, None] * x


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose statistics stay accurate on channels-last (and other strided) inputs.

    PyTorch's CPU kernel for channels-last inputs computes the variance in one pass
    (``E[x^2] - E[x]^2`` in float32): on activations with an offset (``0.5 + 0.01 N(0, 1)``) it is
    over 100x less accurate than the kernel for contiguous inputs, and the error grows with the
    ratio of the mean to the spread. Here the statistics of a one-group norm come from
    ``torch.var_mean`` (Welford), then a single ``x * scale + shift`` pass keeps the input's memory
    layout, as the native kernels do. Other group counts run the native kernel on a contiguous copy.
    Parameter names and initialisation are those of ``nn.GroupNorm`` (state dicts load unchanged).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        # A tensor can be both (one channel, or a 1x1 image): PyTorch then picks the one-pass kernel.
        if x.is_contiguous() and not channels_last:
            return super().forward(x)
        if self.num_groups != 1:
            layout = torch.channels_last if channels_last else torch.contiguous_format
            return super().forward(x.contiguous()).contiguous(memory_format=layout)
        if x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm of {self.num_channels} channels got input of shape {tuple(x.shape)}")
        variance, mean = torch.var_mean(x, dim=tuple(range(1, x.dim())), keepdim=True, correction=0)
        scale = (variance + self.eps).rsqrt()  # (N, 1, ...)
        channel_shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.weight is not None:
            scale = scale * self.weight.view(channel_shape)  # (N, C, 1, ...)
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.view(channel_shape)
        return torch.addcmul(shift, x, scale)


class BLSTM(nn.Module):
    """Bidirectional LSTM over time with a linear projection back to ``dim`` channels.

    With ``max_steps``, sequences longer than that are cut into half-overlapping windows, each
    window is processed on its own, and the window centres are stitched back together.
    """

    def __init__(self, dim: int, layers: int = 1, max_steps: int | None = None, skip: bool = False) -> None:
        super().__init__()
        if max_steps is not None and max_steps % 4:
            raise ValueError(f"max_steps must be a multiple of 4, got {max_steps}")
        self.max_steps = max_steps
        self.skip = skip
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, channels, time) -> (time, batch, channels) for the LSTM and back
        y = self.lstm(x.permute(2, 0, 1))[0]
        return self.linear(y).permute(1, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        if self.max_steps is None or length <= self.max_steps:
            y = self._run(x)
        else:
            width = self.max_steps
            hop = width // 2
            num_frames = math.ceil(length / hop)
            padded = F.pad(x, (0, (num_frames - 1) * hop + width - length))
            frames = padded.unfold(-1, width, hop)  # (batch, channels, frames, width)
            frames = frames.permute(0, 2, 1, 3).reshape(-1, channels, width)
            out = self._run(frames).reshape(batch, num_frames, channels, width)
            margin = hop // 2
            pieces = [out[:, 0, :, :-margin]]
            pieces += [out[:, index, :, margin:-margin] for index in range(1, num_frames - 1)]
            pieces.append(out[:, -1, :, margin:])
            y = torch.cat(pieces, dim=-1)[..., :length]
        if self.skip:
            y = y + x
        return y


class LocalState(nn.Module):
    """Content-based attention over time, penalised by learnt decays of the time distance."""

    def __init__(self, channels: int, heads: int = 4, ndecay: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"LocalState: heads={heads} must divide channels={channels}")
        self.heads = heads
        self.ndecay = ndecay
        self.content = nn.Conv1d(channels, channels, 1)
        self.query = nn.Conv1d(channels, channels, 1)
        self.key = nn.Conv1d(channels, channels, 1)
        if ndecay:
            self.query_decay = nn.Conv1d(channels, heads * ndecay, 1)
            setattr(self.query_decay, DECAY_ATTR, True)
            with torch.no_grad():
                self.query_decay.weight.mul_(0.01)
                self.query_decay.bias.fill_(-2.0)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        heads = self.heads
        positions = torch.arange(length, device=x.device, dtype=x.dtype)
        distance = positions[:, None] - positions[None, :]  # key index minus query index

        queries = self.query(x).view(batch, heads, -1, length)
        keys = self.key(x).view(batch, heads, -1, length)
        scores = torch.einsum("bhct,bhcs->bhts", keys, queries)  # t: keys, s: queries
        scores /= keys.shape[2] ** 0.5
        if self.ndecay:
            decays = torch.arange(1, self.ndecay + 1, device=x.device, dtype=x.dtype)
            decay_queries = torch.sigmoid(self.query_decay(x).view(batch, heads, -1, length)) / 2
            decay_kernel = -decays.view(-1, 1, 1) * distance.abs() / self.ndecay**0.5
            scores += torch.einsum("fts,bhfs->bhts", decay_kernel, decay_queries)

        # a step never attends to itself
        scores.masked_fill_(torch.eye(length, device=x.device, dtype=torch.bool), -100)
        weights = torch.softmax(scores, dim=2)
        content = self.content(x).view(batch, heads, -1, length)
        result = torch.einsum("bhts,bhct->bhcs", weights, content).reshape(batch, -1, length)
        return x + self.proj(result)


class DConv(nn.Module):
    """Residual branches of dilated convolutions, optionally with BiLSTM and local attention.

    Each of the ``depth`` layers is ``conv(k, dilation 2**d) -> norm -> act [-> BLSTM] [-> LocalState]
    -> 1x1 conv -> norm -> GLU -> LayerScale`` applied on a ``channels / compress`` wide projection,
    and added to its input.
    """

    def __init__(
        self,
        channels: int,
        compress: float = 4,
        depth: int = 2,
        init: float = 1e-4,
        norm: bool = True,
        attn: bool = False,
        heads: int = 4,
        ndecay: int = 4,
        lstm: bool = False,
        gelu: bool = True,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        dilate = depth > 0
        depth = abs(depth)
        hidden = int(channels / compress)
        activation = nn.GELU if gelu else nn.ReLU

        def make_norm(width: int) -> nn.Module:
            return GroupNorm(1, width) if norm else nn.Identity()

        self.layers = nn.ModuleList()
        for index in range(depth):
            dilation = 2**index if dilate else 1
            modules: list[nn.Module] = [
                nn.Conv1d(channels, hidden, kernel, dilation=dilation, padding=dilation * (kernel // 2)),
                make_norm(hidden),
                activation(),
            ]
            if lstm:
                modules.append(BLSTM(hidden, layers=2, max_steps=200, skip=True))
            if attn:
                modules.append(LocalState(hidden, heads=heads, ndecay=ndecay))
            modules += [
                nn.Conv1d(hidden, 2 * channels, 1),
                make_norm(2 * channels),
                nn.GLU(1),
                LayerScale(channels, init),
            ]
            self.layers.append(nn.Sequential(*modules))
        # Branches of plain convolutions, norms and activations run on channels-last views.
        self._channels_last = not (lstm or attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._channels_last:
            for layer in self.layers:
                x = x + layer(x)
            return x
        # (N, C, T) as a (N, C, 1, T) view: with a (N, T, C) memory layout this is channels-last,
        # where oneDNN's convolutions are much faster for the narrow widths used here. The result
        # keeps that layout: (N, C, T) with strides (T * C, 1, C).
        y = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        if not torch.is_grad_enabled() and all(_fusable_tail(layer) for layer in self.layers):
            return self._forward_fused(y).squeeze(2)
        for layer in self.layers:
            branch, scale = _branch_channels_last(layer, y)
            y = torch.addcmul(y, scale[:, None, None], branch)  # y + LayerScale(branch) in one pass
        return y.squeeze(2)

    def _forward_fused(self, y: torch.Tensor) -> torch.Tensor:
        """The channels-last loop with every branch through `_fused_projections` (inference only).

        Each branch is two batched matmuls (GLU values, gates), an in-place sigmoid and one
        ``residual + values * gates`` pass written over the values; buffers are reused between
        branches (large fresh allocations cost page faults on every call).
        """
        batch, channels, _, length = y.shape
        residual = y.permute(0, 2, 3, 1).reshape(batch, length, channels)  # a view for channels-last y
        spare: list[torch.Tensor] = []
        for index, layer in enumerate(self.layers):
            rows, weight_a, weight_b = _fused_projections(layer, y)
            values = torch.bmm(rows, weight_a, out=spare.pop()) if spare else torch.bmm(rows, weight_a)
            gates = torch.bmm(rows, weight_b, out=spare.pop()) if spare else torch.bmm(rows, weight_b)
            out = torch.addcmul(residual, values, gates.sigmoid_(), out=values)
            spare.append(gates)
            if index:  # the input of the first branch may be the caller's tensor
                spare.append(residual)
            residual = out
            y = out.view(batch, 1, length, channels).permute(0, 3, 1, 2)
        return y


def _conv_as_2d(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` applied to ``(N, C, 1, T)`` as a 2-D convolution with a ``(1, k)`` kernel."""
    return F.conv2d(
        x,
        conv.weight.unsqueeze(2),
        conv.bias,
        stride=(1, conv.stride[0]),
        padding=(0, conv.padding[0]),
        dilation=(1, conv.dilation[0]),
        groups=conv.groups,
    )


def _branch_channels_last(layer: nn.Sequential, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One `DConv` branch (conv, norm, activation, 1x1 conv, norm, GLU) on ``(N, C, 1, T)``, and the
    per-channel scale of its final `LayerScale` (applied by the caller)."""
    *modules, layer_scale = layer
    if not isinstance(layer_scale, LayerScale):
        raise TypeError(f"a DConv branch ends with a LayerScale, got {type(layer_scale).__name__}")
    for module in modules:
        # GroupNorm / Identity / GELU / ReLU / GLU(1) work on 4-D tensors as they are
        y = _conv_as_2d(module, y) if isinstance(module, nn.Conv1d) else module(y)
    return y, layer_scale.scale


def _fusable_tail(layer: nn.Sequential) -> bool:
    """Whether a branch is ``conv, norm, act, 1x1 conv, GroupNorm(1) or Identity, GLU(1), LayerScale``."""
    if len(layer) != 7:
        return False
    _, _, _, projection, norm, glu, layer_scale = layer
    return (
        isinstance(projection, nn.Conv1d)
        and projection.kernel_size == (1,)
        and projection.groups == 1
        and (isinstance(norm, nn.Identity) or (isinstance(norm, nn.GroupNorm) and norm.num_groups == 1))
        and isinstance(glu, nn.GLU)
        and glu.dim == 1
        and isinstance(layer_scale, LayerScale)
    )


def _fused_projections(
    layer: nn.Sequential, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The narrow rows and per-sample weights giving a `_fusable_tail` branch's GLU halves.

    Returns ``rows`` ``(N, T, hidden + 1)`` (the activations before the 1x1 projection, centred on
    their mean over time, then a column of ones) and ``weight_a``, ``weight_b``
    ``(N, hidden + 1, C)`` such that
    ``LayerScale(GLU(norm(projection)))`` is ``(rows @ weight_a) * sigmoid(rows @ weight_b)``.

    The one-group norm of ``h = W g + b`` has per-sample statistics that follow from the narrow
    ``g``: the sum and Gram matrix (float64) of ``g`` centred on its mean over time, so the variance
    is a sum of small terms, not a one-pass difference of large ones. The normalisation, its affine
    and the LayerScale then fold into the projection, so the ``2C``-wide ``h`` is never
    materialised.
    """
    conv, norm_in, activation, projection, norm, _, layer_scale = layer
    channels = y.shape[1]
    g = activation(norm_in(_conv_as_2d(conv, y)))  # (N, hidden, 1, T), channels-last
    batch, hidden, _, length = g.shape
    narrow = g.permute(0, 2, 3, 1).reshape(batch, length, hidden)  # a view for channels-last g
    # The rows are centred on their per-sample mean over time (rounded to the working precision, so
    # that the folded shift below is exact for it). Activations after GELU carry an offset; without
    # centring, the float32 product with the folded weights would be large and cancel against
    # the shift (the error grows with offset / spread), and the norm statistics would be a
    # one-pass ``E[h^2] - E[h]^2``.
    centre = narrow.mean(1, dtype=torch.float64).to(g.dtype)  # (N, hidden)
    rows = torch.empty(batch, length, hidden + 1, dtype=g.dtype, device=g.device)
    torch.sub(narrow, centre[:, None], out=rows[..., :hidden])
    rows[..., hidden] = 1.0
    weight = projection.weight[:, :, 0].double().t()  # (hidden, 2C)
    bias = projection.bias
    bias = torch.zeros(2 * channels, dtype=torch.float64, device=y.device) if bias is None else bias.double()
    # h = W^T u + offset with u the centred rows and offset_c = W_c^T centre + b_c, per sample
    offset = centre.double() @ weight + bias  # (N, 2C)
    if isinstance(norm, nn.GroupNorm):
        u64 = rows[..., :hidden].double()
        total = u64.sum(1)  # (N, hidden): zero up to the rounding of the centre
        gram = u64.transpose(1, 2) @ u64  # (N, hidden, hidden)
        count = length * 2 * channels
        mean = ((total @ weight).sum(1) + length * offset.sum(1)) / count  # (N,)
        deviation = offset - mean[:, None]  # (N, 2C)
        # sum over (c, t) of (W_c^T u_t + deviation_c)^2, every term small: no cancellation
        squares = ((gram @ weight) * weight).sum((1, 2)) + 2 * ((total @ weight) * deviation).sum(1)
        squares = squares + length * deviation.square().sum(1)
        variance = (squares / count).clamp_min(0)
        scale = (variance + norm.eps).rsqrt()[:, None]  # (N, 1)
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        shift = deviation * scale
        if norm.bias is not None:
            shift = shift + norm.bias.double()
    else:
        scale = torch.ones(batch, 2 * channels, dtype=torch.float64, device=y.device)
        shift = offset
    gain = layer_scale.scale.double()
    scale_a, scale_b = scale[:, :channels] * gain, scale[:, channels:]
    shift_a, shift_b = shift[:, :channels] * gain, shift[:, channels:]
    weight_a = torch.cat([weight[None, :, :channels] * scale_a[:, None], shift_a[:, None]], 1)
    weight_b = torch.cat([weight[None, :, channels:] * scale_b[:, None], shift_b[:, None]], 1)
    weight_a = weight_a.to(g.dtype).expand(batch, -1, -1)
    weight_b = weight_b.to(g.dtype).expand(batch, -1, -1)
    return rows, weight_a, weight_b


# -- spectrogram helpers (hybrid models) ------------------------------------------------------


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "constant") -> torch.Tensor:
    """``F.pad`` on the last axis that also reflect-pads inputs shorter than the padding.

    A reflection cannot be longer than the signal, so short inputs first get zeros on the right
    (then on the left) until the reflection fits; the original samples keep their position.
    """
    left, right = paddings
    length = x.shape[-1]
    if mode == "reflect" and length <= max(left, right):
        extra = max(left, right) - length + 1
        extra_right = min(right, extra)
        extra_left = extra - extra_right
        x = F.pad(x, (extra_left, extra_right))
        left, right = left - extra_left, right - extra_right
    return F.pad(x, (left, right), mode)


def spectrogram(x: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Normalised, centred, reflect-padded STFT with a Hann window over the last axis."""
    *leading, length = x.shape
    z = torch.stft(
        x.reshape(-1, length),
        n_fft,
        hop_length,
        window=torch.hann_window(n_fft).to(x),
        win_length=n_fft,
        normalized=True,
        center=True,
        return_complex=True,
        pad_mode="reflect",
    )
    return z.view(*leading, z.shape[-2], z.shape[-1])


def inverse_spectrogram(z: torch.Tensor, hop_length: int, length: int) -> torch.Tensor:
    """Inverse of `spectrogram` (``n_fft`` is deduced from the number of bins)."""
    *leading, bins, frames = z.shape
    n_fft = 2 * bins - 2
    x = torch.istft(
        z.reshape(-1, bins, frames),
        n_fft,
        hop_length,
        window=torch.hann_window(n_fft).to(z.real),
        win_length=n_fft,
        normalized=True,
        length=length,
        center=True,
    )
    return x.view(*leading, x.shape[-1])


class FrequencyEmbedding(nn.Module):
    """Learnt embedding of the frequency bin index, added after the first spectral layer.

    ``scale`` boosts its learning rate (the table is stored divided by it); ``smooth`` starts from a
    cumulative sum of Gaussians so neighbouring bins start close to each other.
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, scale: float = 10.0, smooth: bool = False
    ) -> None:
        super().__init__()
        self.scale = scale
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        setattr(self.embedding, EMBEDDING_ATTR, ("frequency", float(scale), bool(smooth)))
        with torch.no_grad():
            self.embedding.weight.copy_(frequency_embedding_init(self.embedding.weight, scale, smooth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x) * self.scale


def frequency_embedding_init(weight: torch.Tensor, scale: float, smooth: bool) -> torch.Tensor:
    table = torch.randn(weight.shape, dtype=weight.dtype, device=weight.device)
    if smooth:
        table = torch.cumsum(table, dim=0)
        table = table / torch.arange(1, table.shape[0] + 1).to(table).sqrt()[:, None]
    return table / scale


class HEncLayer(nn.Module):
    """Encoder layer of the hybrid models, over frequencies (Conv2d with a ``(k, 1)`` kernel) or time.

    ``empty`` layers only hold the strided convolution: the time branch's layer whose output is
    injected into the spectral branch where both branches merge.
    """

    def __init__(
        self,
        chin: int,
        chout: int,
        kernel_size: int = 8,
        stride: int = 4,
        norm_groups: int = 1,
        empty: bool = False,
        freq: bool = True,
        dconv: bool = True,
        norm: bool = True,
        context: int = 0,
        dconv_kw: dict | None = None,
        pad: bool = True,
        rewrite: bool = True,
    ) -> None:
        super().__init__()
        padding = kernel_size // 4 if pad else 0
        self.freq = freq
        self.kernel_size = kernel_size
        self.stride = stride
        self.empty = empty
        self.norm = norm
        self.pad = padding
        if freq:
            self.conv = nn.Conv2d(chin, chout, (kernel_size, 1), (stride, 1), (padding, 0))
        else:
            self.conv = nn.Conv1d(chin, chout, kernel_size, stride, padding)
        if empty:
            return
        conv_class = nn.Conv2d if freq else nn.Conv1d
        self.norm1 = GroupNorm(norm_groups, chout) if norm else nn.Identity()
        self.rewrite = None
        if rewrite:
            self.rewrite = conv_class(chout, 2 * chout, 1 + 2 * context, 1, context)
            self.norm2 = GroupNorm(norm_groups, 2 * chout) if norm else nn.Identity()
        self.dconv = DConv(chout, **(dconv_kw or {})) if dconv else None

    def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
        if not self.freq:
            if x.dim() == 4:
                x = x.reshape(x.shape[0], -1, x.shape[-1])
            remainder = x.shape[-1] % self.stride
            if remainder:
                x = F.pad(x, (0, self.stride - remainder))
        y = self.conv(x)
        if self.empty:
            return y
        if inject is not None:
            if inject.shape[-1] != y.shape[-1]:
                raise RuntimeError(f"time branch length {inject.shape[-1]} != spectral length {y.shape[-1]}")
            if inject.dim() == 3 and y.dim() == 4:
                inject = inject[:, :, None]
            y = y + inject
        y = _gelu_fresh(self.norm1(y))
        if self.dconv is not None:
            y = _apply_over_bins(self.dconv, y) if self.freq else self.dconv(y)
        if self.rewrite is None:
            return y
        return F.glu(self.norm2(self.rewrite(y)), dim=1)


def _gelu_fresh(x: torch.Tensor) -> torch.Tensor:
    """GELU of a tensor this layer just created: in place in inference (a large fresh output costs
    page faults on every call)."""
    return F.gelu(x) if torch.is_grad_enabled() else torch.ops.aten.gelu_(x)


def _apply_over_bins(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Run a ``(batch, channels, time)`` module on every frequency bin of ``(B, C, F, T)``.

    The bins are folded into the batch through a ``(B, F, T, C)`` memory layout (channels-last for
    ``(B, C, F, T)``): a view when ``y`` already has it, and the result comes back with it.
    """
    batch, channels, bins, frames = y.shape
    flat = y.permute(0, 2, 3, 1).reshape(batch * bins, frames, channels).transpose(1, 2)
    out = module(flat)
    return out.transpose(1, 2).reshape(batch, bins, frames, channels).permute(0, 3, 1, 2)


class HDecLayer(nn.Module):
    """Decoder layer of the hybrid models (mirror of `HEncLayer`, with a transposed convolution).

    Returns the layer output and the tensor just before the transposed convolution, which the
    time branch reuses where the two branches split again.
    """

    def __init__(
        self,
        chin: int,
        chout: int,
        last: bool = False,
        kernel_size: int = 8,
        stride: int = 4,
        norm_groups: int = 1,
        empty: bool = False,
        freq: bool = True,
        dconv: bool = True,
        norm: bool = True,
        context: int = 1,
        dconv_kw: dict | None = None,
        pad: bool = True,
        rewrite: bool = True,
    ) -> None:
        super().__init__()
        self.pad = kernel_size // 4 if pad else 0
        self.last = last
        self.freq = freq
        self.chin = chin
        self.empty = empty
        self.stride = stride
        self.kernel_size = kernel_size
        self.norm = norm
        if freq:
            self.conv_tr = nn.ConvTranspose2d(chin, chout, (kernel_size, 1), (stride, 1))
        else:
            self.conv_tr = nn.ConvTranspose1d(chin, chout, kernel_size, stride)
        self.norm2 = GroupNorm(norm_groups, chout) if norm else nn.Identity()
        if empty:
            return
        conv_class = nn.Conv2d if freq else nn.Conv1d
        self.rewrite = None
        if rewrite:
            self.rewrite = conv_class(chin, 2 * chin, 1 + 2 * context, 1, context)
            self.norm1 = GroupNorm(norm_groups, 2 * chin) if norm else nn.Identity()
        self.dconv = DConv(chin, **(dconv_kw or {})) if dconv else None

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.freq and x.dim() == 3:
            x = x.view(x.shape[0], self.chin, -1, x.shape[-1])
        if self.empty:
            y = x
        else:
            x = x + skip
            y = F.glu(self.norm1(self.rewrite(x)), dim=1) if self.rewrite is not None else x
            if self.dconv is not None:
                y = _apply_over_bins(self.dconv, y) if self.freq else self.dconv(y)
        z = self.norm2(self.conv_tr(y))
        if self.freq:
            if self.pad:
                z = z[..., self.pad : -self.pad, :]
        else:
            z = z[..., self.pad : self.pad + length]
        if not self.last:
            z = _gelu_fresh(z)
        return z, y


# -- initialisation ---------------------------------------------------------------------------


def _default_uniform(
    weight: torch.Tensor, fan_in_source: torch.Tensor | None = None
) -> tuple[torch.Tensor, float]:
    """PyTorch's default init of linear/conv weights (kaiming uniform, a=sqrt(5)) and its bias bound."""
    fresh = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    nn.init.kaiming_uniform_(fresh, a=math.sqrt(5))
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(fresh if fan_in_source is None else fan_in_source)
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return fresh, bound


def fresh_parameters(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """New initial values for ``module``'s own parameters, or ``None`` for modules without any.

    Reproduces the original initialisation: PyTorch defaults, then the "rescale trick" for marked
    convolutions (weights and bias divided by ``sqrt(std / reference)``), the small decay query of
    `LocalState`, LayerScale constants and the scaled / smoothed embedding tables.
    """
    values: dict[str, torch.Tensor] = {}
    if isinstance(module, (*CONV_TYPES, nn.Linear)):
        weight, bound = _default_uniform(module.weight)
        values["weight"] = weight
        if module.bias is not None:
            values["bias"] = torch.empty_like(module.bias).uniform_(-bound, bound)
        if getattr(module, DECAY_ATTR, False):
            values["weight"] = values["weight"] * 0.01
            values["bias"] = torch.full_like(module.bias, -2.0)
        if isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear) and module.bias is not None:
            values["bias"] = torch.zeros_like(module.bias)  # attention output projection
        reference = getattr(module, RESCALE_ATTR, None)
        if reference:
            scale = (values["weight"].std() / reference) ** 0.5
            values = {name: value / scale for name, value in values.items()}
    elif isinstance(module, nn.LSTM):
        bound = 1 / math.sqrt(module.hidden_size)
        for name, parameter in module.named_parameters(recurse=False):
            values[name] = torch.empty_like(parameter).uniform_(-bound, bound)
    elif isinstance(module, nn.MultiheadAttention):
        for name, parameter in module.named_parameters(recurse=False):
            if name.endswith("bias"):
                values[name] = torch.zeros_like(parameter)
            else:
                fresh = torch.empty_like(parameter)
                nn.init.xavier_uniform_(fresh)
                values[name] = fresh
    elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
        if module.weight is not None:
            values["weight"] = torch.ones_like(module.weight)
        if module.bias is not None:
            values["bias"] = torch.zeros_like(module.bias)
    elif isinstance(module, LayerScale):
        values["scale"] = torch.full_like(module.scale, module.init_value)
    elif isinstance(module, nn.Embedding):
        kind = getattr(module, EMBEDDING_ATTR, ("plain",))
        if kind[0] == "frequency":
            values["weight"] = frequency_embedding_init(module.weight, kind[1], kind[2])
        elif kind[0] == "positions":
            values["weight"] = torch.randn_like(module.weight) * kind[1]
        else:
            values["weight"] = torch.randn_like(module.weight)
    else:
        own = list(module.named_parameters(recurse=False))
        if not own:
            return None
        raise TypeError(f"no initialisation rule for {type(module).__name__}")
    return values
