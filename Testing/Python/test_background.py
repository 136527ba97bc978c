"""Background jobs end with their whole process tree, as they must inside Slicer.

In Slicer the process started is ``PythonSlicer``, CTK's AppLauncher, which runs
the real Python as its *child* and waits for it. The stand-in launcher here does
exactly that (a shell that starts this Python and waits), so killing only the
process started would leave the work running, as it did in Slicer.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from LungGANLib.slicer import background
from LungGANLib.slicer.background import CANCELLED, RUNNING, BackgroundProcess, python_executable
from LungGANLib.errors import LungGANError

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="walks /proc for the process tree")


@pytest.fixture
def slicer_launcher(monkeypatch, tmp_path):
    """A fake Slicer install: sys.executable is the application, PythonSlicer beside it starts Python as a child."""
    folder = tmp_path / "Slicer-5.8.1-linux-amd64"
    folder.mkdir()
    launcher = folder / "PythonSlicer"
    launcher.write_text(f'#!/bin/sh\n# As ctkAppLauncher: run the real Python as a child, wait, pass on its status.\n"{sys.executable}" "$@"\nexit $?\n')
    launcher.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(folder / "Slicer"))
    return launcher


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as ended)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_progress(job, timeout=120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(event.get("event") == "progress" for event in job.poll()):
            return
        assert job.state == RUNNING, job.error
        time.sleep(0.1)
    pytest.fail("no progress from the background job")


def test_the_launcher_stand_in_is_found_and_runs_python_as_its_child(slicer_launcher):
    assert python_executable() == str(slicer_launcher)


def test_cancel_ends_the_launcher_and_the_python_it_started(slicer_launcher, data, tmp_path):
    out = tmp_path / "out" / "lungs.nii.gz"
    out.parent.mkdir()
    job = BackgroundProcess(["segment", data / "ct/lidc-idri-0002.nii.gz", "-o", out, "--device", "cpu", "--progress-json"])
    wait_for_progress(job)
    tree = {job.process.pid} | descendants(job.process.pid)
    assert len(tree) >= 2  # the launcher and the Python doing the work
    job.cancel()
    assert job.state == CANCELLED
    deadline = time.time() + 10
    while any(alive(pid) for pid in tree) and time.time() < deadline:
        time.sleep(0.1)
    assert [pid for pid in tree if alive(pid)] == []
    assert list(out.parent.iterdir()) == []  # no mask, no temporary file


def test_processes_still_running_when_python_exits_are_ended(slicer_launcher, data, tmp_path):
    job = BackgroundProcess(["segment", data / "ct/lidc-idri-0002.nii.gz", "-o", tmp_path / "m.nii.gz", "--device", "cpu",
                             "--progress-json"])
    wait_for_progress(job)
    tree = {job.process.pid} | descendants(job.process.pid)
    background._end_all()  # what atexit runs when Slicer closes
    assert [pid for pid in tree if alive(pid)] == []


def test_sigterm_ends_the_command_line_cleanly(data, tmp_path):
    import signal
    import subprocess

    process = subprocess.Popen([sys.executable, "-m", "LungGANLib.cli", "segment", str(data / "ct/lidc-idri-0002.nii.gz"),
                                "-o", str(tmp_path / "m.nii.gz"), "--device", "cpu", "--progress-json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith('{"event": "progress"')
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert "Traceback" not in err and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


def test_no_launcher_gives_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    for executable in ("", str(tmp_path / "Slicer")):
        monkeypatch.setattr(sys, "executable", executable)
        with pytest.raises(LungGANError, match="no Python launcher"):
            python_executable()


def test_start_options_give_a_tree_of_its_own_and_no_console_window(monkeypatch):
    assert background._start_options() == {"start_new_session": True}
    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setattr(background.subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200, raising=False)
    monkeypatch.setattr(background.subprocess, "CREATE_NO_WINDOW", 0x8000000, raising=False)
    assert background._start_options() == {"creationflags": 0x200 | 0x8000000}


def test_cancel_in_the_slicer_logic_leaves_no_process_and_the_scene_as_it_was(slicer_launcher, data):
    slicer = pytest.importorskip("slicer", reason="slicer-core is part of the test requirements")
    from LungGANLib.slicer import mrml

    scene = slicer.vtkMRMLScene()
    logic = mrml.LungGANLogic(scene)
    ct = logic.loadCT(data / "ct/lidc-idri-0001.nii.gz")
    before = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    job = logic.startSegmentation(ct, device="cpu")
    assert job.process.process.args[0] == str(slicer_launcher)
    wait_for_progress(job.process)
    tree = {job.process.process.pid} | descendants(job.process.process.pid)
    job.process.cancel()
    assert [pid for pid in tree if alive(pid)] == []
    with pytest.raises(mrml.Cancelled):
        job.finish()
    assert [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())] == before
    assert not job.work.exists()
    scene.Clear(1)


def test_an_undecodable_byte_on_stderr_does_not_stop_the_reader(monkeypatch, tmp_path):
    """A path in a Windows code page in the child's message: the reader thread goes on, the error is read."""
    child = tmp_path / "child"
    child.write_text("#!/bin/sh\nprintf 'ITK: cannot read C:\\\\\\377\\376.nii\\n' >&2\necho 'lunggan: error: the CT is broken' >&2\nexit 2\n")
    child.chmod(0o755)
    monkeypatch.setattr(background, "python_executable", lambda: str(child))
    job = BackgroundProcess(["segment"])
    assert job.wait(30) == "failed"
    assert job.error == "the CT is broken"
