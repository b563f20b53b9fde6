"""Progress display: a tqdm bar on a terminal, periodic log lines otherwise; process 0 only.

API:

- `Progress(total, *, initial=0, bar=None, enabled=None, desc="train")`: `bar` defaults to
  whether stdout is a terminal; `enabled` to `jax.process_index() == 0`.
  `update(step, metrics=None, *, log=False)` moves the bar to `step` and shows `metrics`
  beside it; without a bar, `update` with metrics (or `log=True`) logs one line
  `train step 100/500 (20%): loss=0.312 ...` (`desc` first; call it at the logging interval).
  `close()`; a context manager.
- `track(iterable, *, desc, total=None, log_every=None)`: yields the items of `iterable` with a
  `Progress` of `desc` over them (the phase of an experiment that loops over batches, layers or
  methods); without a bar, a log line every `log_every` items (default: a tenth) and at the end.
- `format_metrics(metrics) -> str`: `name=value` pairs with 4 significant digits.

While a bar is shown, log lines (absl's handler and the standard library's console handlers)
are written through `tqdm.write`, above the bar, so they do not garble it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
from absl import logging


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """`a=0.1234 b=12.35` (None shown as nan)."""
    parts = []
    for name, value in metrics.items():
        parts.append(f"{name}={float('nan') if value is None else float(value):.4g}")
    return " ".join(parts)


class _TqdmStream:
    """A text stream that writes through `tqdm.write` (above any open bar)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> None:
        from tqdm.auto import tqdm

        if text.strip():
            tqdm.write(text.rstrip("\n"), file=self._stream)

    def flush(self) -> None:
        self._stream.flush()


class Progress:
    """Training progress on process 0 (module docstring)."""

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        bar: bool | None = None,
        enabled: bool | None = None,
        desc: str = "train",
    ):
        self.total, self.step, self.desc = int(total), int(initial), desc
        self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        use_bar = sys.stdout.isatty() if bar is None else bool(bar)
        self._bar = None
        if self.enabled and use_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.step, desc=desc, dynamic_ncols=True)
            self._route_logs()

    def _route_logs(self) -> None:
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._redirect = logging_redirect_tqdm()  # standard-library console handlers
        self._redirect.__enter__()
        handler = logging.get_absl_handler().python_handler
        self._absl = (handler, handler.stream)
        if not isinstance(handler.stream, _TqdmStream):
            handler.stream = _TqdmStream(handler.stream)

    def _unroute_logs(self) -> None:
        handler, stream = self._absl
        handler.stream = stream
        self._redirect.__exit__(None, None, None)

    def update(
        self, step: int, metrics: Mapping[str, Any] | None = None, *, log: bool = False
    ) -> None:
        """Progress to `step`; show or log `metrics` when given (without a bar, `log=True` logs
        the step alone)."""
        step = int(step)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self.step)
            if metrics:
                self._bar.set_postfix_str(format_metrics(metrics), refresh=False)
        elif metrics or log:
            pct = 100.0 * step / max(self.total, 1)
            shown = f": {format_metrics(metrics)}" if metrics else ""
            logging.info("%s step %d/%d (%.0f%%)%s", self.desc, step, self.total, pct, shown)
        self.step = step

    def close(self) -> None:
        if self._bar is not None:
            self._unroute_logs()
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(
    iterable: Iterable[Any],
    *,
    desc: str,
    total: int | None = None,
    log_every: int | None = None,
    bar: bool | None = None,
) -> Iterator[Any]:
    """The items of `iterable`, with progress over them (module docstring)."""
    items = iterable if total is not None else list(iterable)
    total = len(items) if total is None else int(total)
    every = log_every or max(total // 10, 1)
    with Progress(total, bar=bar, desc=desc) as progress:
        for k, item in enumerate(items, 1):
            yield item
            progress.update(k, log=k % every == 0 or k == total)
