"""Helpers for the notebooks in ``notebooks/``.

:func:`show` renders a matplotlib figure to a PNG output itself, so figures appear whatever
backend is active (inline in Jupyter, ``Agg`` in the executed-notebook tests) and the tests see
every plot as an output.
"""

from __future__ import annotations

import io
from typing import Any


def show(fig: Any, dpi: int = 90) -> None:
    """Display ``fig`` as a PNG in the notebook output and close it."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="png"))


def gate_verdict(decision: Any, applied: bool) -> str:
    """How a promotion-gate decision reads in a notebook: done (``applied``) or a dry run."""
    if decision.promoted:
        return "was promoted" if applied else "would be promoted"
    return "stays a challenger" if applied else "would not be promoted"
