"""What every figure shares: matplotlib without a display, tick helpers, closing."""

import io

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

# Log axes get ticks at these multiples of each power of ten while the range spans at most
# this many decades, and at powers of ten alone beyond it.
LOG_SUBS = (1.0, 2.0, 5.0)
LOG_SUBS_MAX_DECADES = 2.5


def integer_ticks(axis) -> None:
    """Whole-number ticks on an axis of epochs, trials or another count."""
    axis.set_major_locator(MaxNLocator(integer=True))


def readable_log_ticks(figure: Figure) -> None:
    """Plain-number labels (0.005, 0.01, 0.02) at a few ticks on every log-scaled axis.

    On a range shorter than a decade or two, matplotlib labels the minor ticks too, as
    2x10^-2, 3x10^-2, ..., and at a figure's normal size those labels overprint.
    """
    for ax in figure.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "log":
                continue
            low, high = sorted(axis.get_view_interval())
            decades = np.log10(high / low) if low > 0 else np.inf
            subs = LOG_SUBS if decades <= LOG_SUBS_MAX_DECADES else (1.0,)
            axis.set_major_locator(LogLocator(subs=subs))
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.set_minor_formatter(NullFormatter())


def close(fig: Figure) -> None:
    plt.close(fig)


def png_bytes(figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed (matplotlib keeps open ones alive)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    close(figure)
    return buffer.getvalue()
