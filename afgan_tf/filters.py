"""Low-pass filter design and the StyleGAN3 synthesis layer schedule (docs/ALGORITHM.md §2, §3.4, §3.5).

* ``kaiser_atten`` / ``kaiser_beta``: Kaiser's formulas (same results as ``scipy.signal.kaiser_atten/kaiser_beta``).
* ``design_lowpass_filter``: separable Kaiser-windowed sinc (``scipy.signal.firwin(numtaps, cutoff, width=width,
  fs=fs)`` semantics) or the radially symmetric Kaiser-windowed jinc of config R. float32 numpy, or ``None`` for 1 tap.
* ``synthesis_schedule``: per-layer records (``LayerSpec``) with names, sizes, channels, sampling rates, cutoffs,
  half-widths, up/down factors, filter taps, filtered_lrelu padding, radial flag, fp16 flag, critical flag.

Everything is computed in float64 numpy, filters are returned as float32 (as the original stores them).
"""
import dataclasses
import math

import numpy as np
import scipy.special

__all__ = ["kaiser_atten", "kaiser_beta", "kaiser_window", "design_lowpass_filter", "LayerSpec",
           "synthesis_schedule", "layer_geometry", "input_spec"]


def kaiser_atten(numtaps, width):
    """Attenuation (dB) of a Kaiser FIR filter with ``numtaps`` taps and transition ``width`` (fraction of Nyquist)."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def kaiser_beta(a):
    """Kaiser window beta for an attenuation of ``a`` dB."""
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a > 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def kaiser_window(numtaps, beta):
    """Symmetric Kaiser window ``I0(beta * sqrt(1 - (2 m / (n - 1))^2)) / I0(beta)`` (= ``numpy.kaiser``), float64."""
    if numtaps == 1:
        return np.ones(1)
    m = np.arange(numtaps) - (numtaps - 1) / 2
    arg = np.clip(1.0 - (2.0 * m / (numtaps - 1)) ** 2, 0.0, None)
    return scipy.special.i0(beta * np.sqrt(arg)) / scipy.special.i0(beta)


def _check_design_args(numtaps, cutoff, width, fs):
    if isinstance(numtaps, bool) or not isinstance(numtaps, (int, np.integer)) or numtaps < 1:
        raise ValueError(f"numtaps must be a positive int, got {numtaps!r}")
    if not fs > 0:
        raise ValueError(f"fs must be > 0, got {fs!r}")
    if numtaps > 1:
        if not 0 < cutoff < fs / 2:
            raise ValueError(f"cutoff must lie in (0, fs/2) = (0, {fs / 2:g}), got {cutoff!r}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")


def design_lowpass_filter(numtaps, cutoff, width, fs, radial=False):
    """Designs a StyleGAN3 low-pass filter (docs/ALGORITHM.md §2).

    Args:
      numtaps: number of taps ``n`` per axis; 1 means "no filter" and returns ``None``.
      cutoff: -6 dB cutoff frequency ``f_c`` (same units as ``fs``).
      width: full transition band ``2 f_h`` (same units as ``fs``); determines the Kaiser beta.
      fs: sampling rate the filter runs at.
      radial: False -> 1-D separable Kaiser sinc ``[n]``; True -> 2-D radial Kaiser jinc ``[n, n]``.

    Steps: beta = kaiser_beta(kaiser_atten(n, width / (fs/2))); window = Kaiser(n, beta);
    sinc: ``h_i = (2 f_c/fs) sinc(2 f_c m_i / fs) w_i`` with ``m_i = i - (n-1)/2``;
    jinc: ``h_ij = J1(2 pi f_c r_ij) / (pi r_ij) w_i w_j`` with ``r_ij = |(m_i, m_j)| / fs``;
    normalise to unit sum. Returns float32 numpy.
    """
    _check_design_args(numtaps, cutoff, width, fs)
    if numtaps == 1:
        return None
    beta = kaiser_beta(kaiser_atten(numtaps, width / (fs / 2)))
    w = kaiser_window(numtaps, beta)  # [n]
    m = np.arange(numtaps) - (numtaps - 1) / 2  # [n] tap offsets
    if not radial:
        c = 2.0 * cutoff / fs  # cutoff as a fraction of Nyquist
        h = c * np.sinc(c * m) * w  # [n]
    else:
        x = m / fs
        r = np.hypot(x[None, :], x[:, None])  # [n, n]; never 0 for even n
        if np.any(r == 0):
            # Odd tap count: the centre tap is the limit J1(a r)/(pi r) -> a / (2 pi) with a = 2 pi f_c.
            r_safe = np.where(r == 0, 1.0, r)
            h = np.where(r == 0, cutoff, scipy.special.j1(2 * math.pi * cutoff * r_safe) / (math.pi * r_safe))
        else:
            h = scipy.special.j1(2 * math.pi * cutoff * r) / (math.pi * r)
        h = h * np.outer(w, w)  # separable window, on purpose (as the original)
    h = h / np.sum(h)
    return h.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Constants of one synthesis layer ``L{index}`` (docs/ALGORITHM.md §3.4/§3.5). Rates/cutoffs in cycles per canvas unit."""
    index: int
    name: str
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    tmp_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    out_stopband: float
    up: int
    down: int
    conv_kernel: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple  # (x0, x1, y0, y1) for filtered_lrelu

    def up_filter(self):
        """Separable up-filter ``[up_taps]`` (float32) or None."""
        return design_lowpass_filter(self.up_taps, self.in_cutoff, self.in_half_width * 2, self.tmp_sampling_rate)

    def down_filter(self):
        """Down-filter ``[down_taps]`` or radial ``[down_taps, down_taps]`` (float32) or None."""
        return design_lowpass_filter(self.down_taps, self.out_cutoff, self.out_half_width * 2,
                                     self.tmp_sampling_rate, radial=self.down_radial)

    def as_dict(self):
        return dataclasses.asdict(self)


def _positive_int(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return int(v)


def synthesis_schedule(img_resolution, channel_base, channel_max, num_layers=14, num_critical=2, first_cutoff=2,
                       first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, margin_size=10, conv_kernel=3,
                       use_radial_filters=False, num_fp16_res=4, filter_size=6, lrelu_upsampling=2, img_channels=3):
    """Per-layer schedule of the StyleGAN3 synthesis network (docs/ALGORITHM.md §3.5), a list of ``num_layers + 1`` LayerSpec.

    Args (the original's SynthesisNetwork/SynthesisLayer hyperparameters):
      img_resolution: output resolution (power of two). channel_base, channel_max: capacity (already doubled for R).
      num_layers: synthesis layers excluding ToRGB (14). num_critical: critically sampled layers at the end (2).
      first_cutoff, first_stopband: f_c and f_t of layer 0. last_stopband_rel: f_t of the last layers / (res/2).
      margin_size: extra samples per side at the non-final rates. conv_kernel: 3 (T) or 1 (R); ToRGB always 1.
      use_radial_filters: radial jinc down-filters for non-critical layers (R). num_fp16_res: rates using fp16.
      filter_size: taps per unit of the lower rate (6). lrelu_upsampling: the nonlinearity's rate factor (2).
      img_channels: output channels of ToRGB.

    Steps: e_i = min(i/(N - num_critical), 1); f_c, f_t geometric from the first to the last values;
    s = 2^ceil(log2(min(2 f_t, res))); f_h = max(f_t, s/2) - f_c; size = s + 2 margin (last two: res);
    ch = rint(min(channel_base/2 / f_c, channel_max)) (last: img_channels); then per layer the temporary rate,
    up/down factors, taps and the padding that keeps the sample grids centred (docs/ALGORITHM.md §1.1, §3.4).
    The input layer's constants are those of layer 0's input side (see ``input_spec``).
    """
    img_resolution = _positive_int(img_resolution, "img_resolution", 2)
    if img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two, got {img_resolution}")
    num_layers = _positive_int(num_layers, "num_layers")
    num_critical = _positive_int(num_critical, "num_critical", 0)
    if num_critical >= num_layers:
        raise ValueError(f"num_critical ({num_critical}) must be < num_layers ({num_layers})")
    conv_kernel = _positive_int(conv_kernel, "conv_kernel")
    filter_size = _positive_int(filter_size, "filter_size")
    lrelu_upsampling = _positive_int(lrelu_upsampling, "lrelu_upsampling")
    img_channels = _positive_int(img_channels, "img_channels")
    margin_size = _positive_int(margin_size, "margin_size", 0)
    num_fp16_res = _positive_int(num_fp16_res, "num_fp16_res", 0)
    if not channel_base > 0 or not channel_max > 0:
        raise ValueError(f"channel_base and channel_max must be > 0, got {channel_base!r}, {channel_max!r}")

    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents  # [N+1]
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents  # [N+1]
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))  # [N+1]
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs  # [N+1]
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels

    layers = []
    for i in range(num_layers + 1):
        prev = max(i - 1, 0)
        is_torgb = i == num_layers
        is_crit = i >= num_layers - num_critical
        in_rate, out_rate = int(rates[prev]), int(rates[i])
        in_size, out_size = int(sizes[prev]), int(sizes[i])
        g = layer_geometry(is_torgb, in_rate, out_rate, in_size, out_size, conv_kernel, filter_size,
                           lrelu_upsampling, name=f"layer {i}")
        tmp_rate, up, down, k = g["tmp_sampling_rate"], g["up"], g["down"], g["conv_kernel"]
        up_taps, down_taps = g["up_taps"], g["down_taps"]
        pad_lo, pad_hi = g["padding"][:2]
        out_ch = int(channels[i])
        layers.append(LayerSpec(
            index=i, name=f"L{i}_{out_size}_{out_ch}", is_torgb=is_torgb, is_critically_sampled=is_crit,
            use_fp16=bool(rates[i] * 2 ** num_fp16_res > img_resolution),
            in_channels=int(channels[prev]), out_channels=out_ch, in_size=in_size, out_size=out_size,
            in_sampling_rate=in_rate, out_sampling_rate=out_rate, tmp_sampling_rate=tmp_rate,
            in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[i]),
            in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[i]),
            out_stopband=float(stopbands[i]), up=up, down=down, conv_kernel=k, up_taps=up_taps,
            down_taps=down_taps, down_radial=bool(use_radial_filters and not is_crit and down_taps > 1),
            padding=(pad_lo, pad_hi, pad_lo, pad_hi)))
    return layers


def layer_geometry(is_torgb, in_sampling_rate, out_sampling_rate, in_size, out_size, conv_kernel=3, filter_size=6,
                   lrelu_upsampling=2, name="layer"):
    """Derived constants of one SynthesisLayer (docs/ALGORITHM.md §3.4): dict(tmp_sampling_rate, up, down, conv_kernel,
    up_taps, down_taps, padding=(x0, x1, y0, y1)).

    s_tmp = max(s_in, s_out) * (1 if ToRGB else lrelu_upsampling); up = s_tmp/s_in; down = s_tmp/s_out;
    k = 1 for ToRGB; taps = filter_size * factor (1 = none for factor 1 or ToRGB);
    P = (out_size-1)*down + 1 - (in_size+k-1)*up + n_up + n_down - 2; lo = (P + up)//2; hi = P - lo.
    """
    in_rate, out_rate = int(in_sampling_rate), int(out_sampling_rate)
    if in_rate != in_sampling_rate or out_rate != out_sampling_rate or in_rate < 1 or out_rate < 1:
        raise ValueError(f"{name}: sampling rates must be positive integers, got {in_sampling_rate!r}, "
                         f"{out_sampling_rate!r}")
    tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else int(lrelu_upsampling))
    if tmp_rate % in_rate or tmp_rate % out_rate:
        raise ValueError(f"{name}: temporary rate {tmp_rate} is not a multiple of the in/out rates "
                         f"{in_rate}/{out_rate}")
    up, down = tmp_rate // in_rate, tmp_rate // out_rate
    k = 1 if is_torgb else int(conv_kernel)
    up_taps = filter_size * up if up > 1 and not is_torgb else 1
    down_taps = filter_size * down if down > 1 and not is_torgb else 1
    pad_total = (int(out_size) - 1) * down + 1 - (int(in_size) + k - 1) * up + up_taps + down_taps - 2
    pad_lo = (pad_total + up) // 2
    pad_hi = pad_total - pad_lo
    return dict(tmp_sampling_rate=tmp_rate, up=up, down=down, conv_kernel=k, up_taps=up_taps, down_taps=down_taps,
                padding=(pad_lo, pad_hi, pad_lo, pad_hi))


def input_spec(schedule):
    """SynthesisInput constants from a schedule: dict(channels, size, sampling_rate, bandwidth)."""
    l0 = schedule[0]
    return dict(channels=l0.in_channels, size=l0.in_size, sampling_rate=l0.in_sampling_rate, bandwidth=l0.in_cutoff)
