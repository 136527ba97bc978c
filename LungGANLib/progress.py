"""Progress reporting for the command line: a tqdm bar for people, JSON lines for Slicer.

Kept apart from :mod:`LungGANLib.cli` so that the stages that report progress
(segmenting, training) do not import the command line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable


class ProgressBar:
    """A tqdm bar on stderr, driven by (done, total) calls; it opens at the first call and closes when done."""

    def __init__(self, desc: str, unit: str = "slice") -> None:
        self.desc, self.unit = desc, unit
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, leave=False, file=sys.stderr)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def emit_json(event: str, **fields) -> None:
    """One machine-readable progress line on stdout (``--progress-json``), for Slicer's background process."""
    print(json.dumps({"event": event, **fields}), flush=True)


Progress = Callable[[int, int], None]
