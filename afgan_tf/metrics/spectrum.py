"""Average power spectra (docs/ALGORITHM.md §7.6) and their plots (heatmap, 0°/45° slices).

Steps of :func:`accumulate_spectrum` per image: x = (u8 − mean)/std (two dataset-wide scalars), multiply by a
separable symmetric Kaiser window (β = 8, each 1-D window normalised to unit energy), zero-pad bottom/right to
``interp·res``, |FFT2|², average over channels; the caller averages over images.
"""
import numpy as np
import scipy.ndimage
import scipy.signal


class MeanStd:
    """Streaming mean / std over all pixels and channels (float64, uint8 scale)."""

    def __init__(self):
        self.n = 0
        self.s = 0.0
        self.s2 = 0.0

    def append(self, images):
        x = np.asarray(images, np.float64)
        self.n += x.size
        self.s += x.sum()
        self.s2 += np.square(x).sum()

    def result(self):
        if self.n == 0:
            raise ValueError("no images were accumulated")
        mean = self.s / self.n
        return mean, float(np.sqrt(max(self.s2 / self.n - mean * mean, 0.0)))


def kaiser_window_2d(res, beta=8.0):
    """Outer product of symmetric Kaiser windows, each normalised to unit energy: [res, res]."""
    w = scipy.signal.windows.kaiser(res, beta, sym=True)
    w = w / np.sqrt(np.sum(np.square(w)))
    return np.outer(w, w)


class SpectrumAccumulator:
    """Average power spectrum of uint8 NHWC images of one resolution.

    Args: mean, std (whitening scalars, uint8 scale), beta (Kaiser β), interp (zero-padding factor).
    """

    def __init__(self, mean, std, beta=8.0, interp=4):
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.mean, self.std, self.beta, self.interp = float(mean), float(std), float(beta), int(interp)
        self.sum = None
        self.count = 0
        self.res = None

    def append(self, images):
        x = np.asarray(images, np.float64)
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"images must be NHWC with square H = W, got shape {x.shape}")
        N, R, _, C = x.shape
        if self.res is None:
            self.res = R
            self.window = kaiser_window_2d(R, self.beta)
            self.sum = np.zeros([R * self.interp] * 2, np.float64)
        elif R != self.res:
            raise ValueError(f"image size changed from {self.res} to {R}")
        x = (x - self.mean) / self.std * self.window[None, :, :, None]              # [N, R, R, C]
        L = R * self.interp
        spec = np.abs(np.fft.fft2(x, s=(L, L), axes=(1, 2))) ** 2                    # [N, L, L, C]
        self.sum += spec.mean(axis=3).sum(axis=0)
        self.count += N

    def result(self):
        if not self.count:
            raise ValueError("no images were accumulated")
        return self.sum / self.count                                                 # [interp·R, interp·R]


def _prepare_heatmap(spectrum, image_size, smooth=1.25):
    """dB, fftshift, wrap one row/column, Gaussian smoothing σ = (L/res)·smooth -> (heat, freqs)."""
    spectrum = np.asarray(spectrum, np.float64)
    L = spectrum.shape[0]
    hmap = 10 * np.log10(np.maximum(spectrum, 1e-30))
    hmap = np.fft.fftshift(hmap)
    hmap = np.concatenate([hmap, hmap[:1, :]], axis=0)
    hmap = np.concatenate([hmap, hmap[:, :1]], axis=1)
    if smooth > 0:
        sigma = spectrum.shape[0] / image_size * smooth
        hmap = scipy.ndimage.gaussian_filter(hmap, sigma=sigma, mode="nearest")
    freqs = np.linspace(-0.5, 0.5, num=L + 1, endpoint=True) * image_size
    return hmap, freqs


def save_figure_atomic(fig, path, dpi=100):
    """Saves a matplotlib figure as PNG atomically (temp file + rename)."""
    from ..utils import atomic_path
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def plot_heatmap(spectrum, image_size, path, dpi=100, smooth=1.25, title=None):
    """Filled contour plot of the (smoothed, dB) spectrum, axes [−res/2, res/2], levels −40…20 dB, 'Blues'."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    hmap, freqs = _prepare_heatmap(spectrum, image_size, smooth)
    fig = plt.figure(figsize=(5, 4.5))
    ax = fig.add_subplot(111)
    levels = np.linspace(-40, 20, num=13, endpoint=True)
    cs = ax.contourf(freqs, freqs, hmap, levels=levels, extend="both", cmap="Blues")
    ax.set_xlim(-image_size / 2, image_size / 2)
    ax.set_ylim(-image_size / 2, image_size / 2)
    ax.set_aspect("equal")
    ax.set_xlabel("frequency x (cycles/image)")
    ax.set_ylabel("frequency y (cycles/image)")
    fig.colorbar(cs, ax=ax, label="dB")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi)
    plt.close(fig)


def spectrum_slices(spectrum, image_size, smooth=0.0):
    """(f0, s0, f45, s45): dB profiles along 0° (centre row, 0…res/2) and 45° (diagonal, 0…res/√2)."""
    hmap, freqs = _prepare_heatmap(spectrum, image_size, smooth)
    c = hmap.shape[0] // 2
    s0 = hmap[c, c:]
    f0 = freqs[c:]
    n = hmap.shape[0] - c
    s45 = hmap[np.arange(c, c + n), np.arange(c, c + n)]
    f45 = freqs[c:] * np.sqrt(2)
    return f0, s0, f45, s45


def plot_slices(spectra, labels, image_size, path, dpi=100, smooth=0.0):
    """0° and 45° slices of several spectra (one curve each), y-axis −50…30 dB."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for spec, lab in zip(spectra, labels):
        f0, s0, f45, s45 = spectrum_slices(spec, image_size, smooth)
        axes[0].plot(f0, s0, label=lab)
        axes[1].plot(f45, s45, label=lab)
    for ax, t, xm in ((axes[0], "0° slice", image_size / 2), (axes[1], "45° slice", image_size / np.sqrt(2))):
        ax.set_xlim(0, xm)
        ax.set_ylim(-50, 30)
        ax.set_title(t)
        ax.set_xlabel("frequency (cycles/image)")
        ax.set_ylabel("dB")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi)
    plt.close(fig)
