"""Keeping what C libraries print off the console.

ITK's readers and writers print their reasons straight to file descriptor 2, past Python's
``sys.stderr``; LungGAN says what went wrong in one line of its own instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager


@contextmanager
def quiet_c_stderr():
    """Send what C code prints on file descriptor 2 to a scratch file for the duration (not Python's sys.stderr)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    with tempfile.TemporaryFile() as scratch:
        sys.stderr.flush()
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
