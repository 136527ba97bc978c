"""Long work in a background process, so Slicer's GUI never freezes.

As lassoan/SlicerMONAIAuto3DSeg does: the ``lunggan`` command line runs in a
separate Python process; its ``--progress-json`` lines are read by a thread
into a queue, and the caller (a ``qt.QTimer`` in the Slicer widget, or a loop
in a script) polls :meth:`BackgroundProcess.poll`. The scene is only touched
after the process has finished, so a cancelled run leaves it as it was.

Cancelling ends the whole process tree. In Slicer the process started is the
``PythonSlicer`` launcher (CTK's AppLauncher), which runs the real Python as
its child: killing only the launcher would leave the work running. So the
process is started in a session (POSIX) or process group (Windows) of its own,
and cancelling signals all of it: SIGTERM first, so the command line removes
its temporary files, then SIGKILL for whatever is left after a grace period
(``taskkill /T`` on Windows). Processes still running when Python exits (Slicer
closing) are ended the same way. On Windows no console window opens.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from ..config import ROOT
from ..errors import LungGANError

#: States of a background process, as the widget shows them.
RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"

#: Seconds a cancelled process tree gets to end on SIGTERM before it is killed.
GRACE_SECONDS = 5.0

#: Processes started and not yet ended, ended when Python exits.
_LIVE: weakref.WeakSet = weakref.WeakSet()


def python_executable() -> str:
    """The Python that can import LungGANLib: this one, or Slicer's ``PythonSlicer`` launcher.

    Inside the Slicer application ``sys.executable`` is the application itself,
    which cannot run ``-m``; Slicer ships ``PythonSlicer`` beside it for that.
    """
    if sys.executable:
        exe = Path(sys.executable)
        if exe.name.lower().startswith("python"):
            return str(exe)
        for candidate in (exe.with_name("PythonSlicer"), exe.with_name("PythonSlicer.exe")):
            if candidate.is_file():
                return str(candidate)
    found = shutil.which("PythonSlicer")
    if found:
        return found
    where = f"beside {sys.executable}" if sys.executable else "(this Python does not know its own executable)"
    raise LungGANError(
        f"no Python launcher (PythonSlicer) found {where} or on the PATH, so LungGAN cannot work in the background: "
        "reinstall Slicer, or use the module's logic in this process (logic.segment)"
    )


def _start_options() -> dict:
    """Popen options that give the process a tree of its own, and no console window on Windows."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def end_process_tree(process: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """End a process started with :func:`_start_options` and every process it started."""
    if os.name == "nt":
        # taskkill /T ends the children too; /F because Windows has no SIGTERM to ask politely.
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True,
                       creationflags=subprocess.CREATE_NO_WINDOW)
        process.wait()
        return
    group = process.pid  # its own session: the group id is its pid
    if not _signal_group(group, signal.SIGTERM):
        process.wait()
        return
    # The launcher may end at once while its child still cleans up: wait for the whole group.
    if not _group_ended(process, group, grace):
        _signal_group(group, signal.SIGKILL)
        _group_ended(process, group, GRACE_SECONDS)
    process.wait()


def _signal_group(group: int, signum: int) -> bool:
    """Send a signal to a process group; False when the group no longer exists."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


def _group_ended(process: subprocess.Popen, group: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for every process of the group to end (reaping our own child)."""
    deadline = time.monotonic() + timeout
    while True:
        process.poll()
        if not _signal_group(group, 0):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@atexit.register
def _end_all() -> None:
    """End every background process still running when Python exits (Slicer closing)."""
    for job in list(_LIVE):
        job.cancel(grace=1.0)


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
        root = str(ROOT)
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
            # One undecodable byte (a path in a Windows code page) must not stop a reader thread: the pipe
            # would fill and the job would hang "running".
            errors="replace",
            env=environment,
            cwd=root,
            **_start_options(),
        )
        _LIVE.add(self)
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
        _LIVE.discard(self)  # ended by itself: the launcher waited for its child, nothing is left to end at exit
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

    def cancel(self, grace: float = GRACE_SECONDS, wait: bool = True, then=None) -> None:
        """Stop the process and every process it started (nothing it would have written to the scene is written).

        Args:
            grace: seconds the tree gets to end on SIGTERM before it is killed.
            wait: return once the tree has ended; False returns at once and ends it in a thread (a GUI
                must not freeze for the grace period): :attr:`state` says ``running`` until it has ended.
            then: called once the tree has ended (in that thread when not waiting), e.g. to remove files.
        """
        if self.process.poll() is None:
            self.cancelled = True

        def end() -> None:
            # Even after the launcher ended, its children may still run in its group.
            end_process_tree(self.process, grace)
            _LIVE.discard(self)
            if then is not None:
                then()

        if wait:
            end()
        else:
            threading.Thread(target=end, daemon=True).start()

    @property
    def warnings(self) -> list[str]:
        """The process's warnings so far (its ``lunggan: warning:`` lines, without that prefix), in order."""
        prefix = "lunggan: warning:"
        return [line[len(prefix) :].strip() for line in self._stderr if line.startswith(prefix)]

    @property
    def error(self) -> str:
        """The process's own error message (its ``lunggan: error:`` line), or its last output."""
        for line in reversed(self._stderr):
            if line.startswith("lunggan: error:"):
                return line[len("lunggan: error:") :].strip()
        return "\n".join(self._stderr[-5:]) or f"exit code {self.process.returncode}"
