"""Long work in a background process, so Slicer's GUI never freezes.

As lassoan/SlicerMONAIAuto3DSeg does: the ``lunggan`` command line runs in a
separate Python process; its ``--progress-json`` lines are read by a thread
into a queue, and the caller (a ``qt.QTimer`` in the Slicer widget, or a loop
in a script) polls :meth:`BackgroundProcess.poll`. Cancelling kills the process;
the scene is only touched after the process has finished, so a cancelled run
leaves it as it was.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

#: States of a background process, as the widget shows them.
RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"


def python_executable() -> str:
    """The Python that can import LungGANLib: this one, or Slicer's ``PythonSlicer`` launcher.

    Inside the Slicer application ``sys.executable`` is the application itself,
    which cannot run ``-m``; Slicer ships ``PythonSlicer`` beside it for that.
    """
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python"):
        return str(exe)
    for candidate in (exe.with_name("PythonSlicer"), exe.with_name("PythonSlicer.exe")):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("PythonSlicer")
    if found:
        return found
    raise RuntimeError(f"no Python launcher found beside {exe}: run LungGAN from the Slicer application or a Python interpreter")


class BackgroundProcess:
    """A ``lunggan`` command running in another process, with its progress events.

    Args:
        args: arguments after ``python -m LungGANLib.cli`` (include ``--progress-json``).
        env: extra environment variables.

    Example:
        >>> job = BackgroundProcess(["segment", "ct.nrrd", "-o", "lungs.nrrd", "--progress-json"])
        >>> while job.state == RUNNING:
        ...     for event in job.poll():
        ...         print(event)
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = [str(a) for a in args]
        root = str(Path(__file__).resolve().parent.parent)
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(p for p in (root, environment.get("PYTHONPATH", "")) if p)
        self._events: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        self.cancelled = False
        self.process = subprocess.Popen(
            [python_executable(), "-m", "LungGANLib.cli", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=root,
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    self._events.put(json.loads(line))
                except json.JSONDecodeError:
                    pass

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self._stderr.append(line.rstrip("\n"))

    @property
    def state(self) -> str:
        """``running``, ``done``, ``failed`` or ``cancelled``."""
        code = self.process.poll()
        if code is None:
            return RUNNING
        if self.cancelled:
            return CANCELLED
        return DONE if code == 0 else FAILED

    def poll(self) -> list[dict]:
        """Progress events that arrived since the last call."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait(self, timeout: float | None = None) -> str:
        """Block until the process ends; returns the final state."""
        self.process.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return self.state

    def cancel(self) -> None:
        """Stop the process (nothing it would have written to the scene is written)."""
        if self.process.poll() is None:
            self.cancelled = True
            self.process.kill()
            self.process.wait()

    @property
    def error(self) -> str:
        """The process's own error message (its ``lunggan: error:`` line), or its last output."""
        for line in reversed(self._stderr):
            if line.startswith("lunggan: error:"):
                return line[len("lunggan: error:") :].strip()
        return "\n".join(self._stderr[-5:]) or f"exit code {self.process.returncode}"
