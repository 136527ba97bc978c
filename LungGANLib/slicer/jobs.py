"""Background jobs of the Slicer module: segmentation and training behind one interface.

A job runs ``lunggan`` in a child process (:class:`LungGANLib.slicer.background.BackgroundProcess`)
on temporary copies of the nodes, and changes the scene only when it is finished.
The widget treats every job alike, polled by a timer::

    job.poll()              # read the process's progress events
    job.state               # RUNNING, DONE, FAILED or CANCELLED
    job.progress            # 0 to 1
    job.status              # one line for the user: while it runs, and what was done
    result = job.finish()   # once it stopped: put the result into the scene (and return it), or raise
    job.cancel()            # stop it; nothing is written (too late once it finished: finish() applies it)
    job.cleanup()           # remove the temporary files (finish and cancel do it)

Results stay on the job too (``job.segmentation``, ``job.figures``, ``job.output``);
a job never writes onto the logic that started it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import SimpleITK as sitk

from ..errors import LungGANError
from ..io.volumes import mask_from_image
from .background import DONE
from .mrml_nodes import (
    Cancelled,
    TrainingPlot,
    ct_from_volume_node,
    segment_names,
    write_segmentation,
)


def segment_arguments(ct_path: Path, out_path: Path, device: str = "auto", model: str | None = None,
                      splitLungs: bool = True, fillHoles: bool = True, masses: bool = False,
                      reviewPath: Path | None = None) -> list:
    """The ``lunggan segment`` command line of a segmentation started in Slicer, with the options of
    :meth:`LungGANLib.slicer.mrml.LungGANLogic.segment`: the CT copy at ``ct_path``, the mask to ``out_path``."""
    args = ["segment", ct_path, "-o", out_path, "--progress-json", "--device", device]
    args += ["--model", model] if model else []
    args += [] if splitLungs else ["--single-label"]
    args += [] if fillHoles else ["--no-fill-holes"]
    args += ["--masses"] if masses else []
    return args + (["--review", reviewPath] if reviewPath is not None else [])


class Job:
    """What segmentation and training have in common: a process, its progress and a temporary folder.

    Args:
        process: the running ``lunggan`` process.
        work: the temporary folder (removed by :meth:`cleanup`).
        what: the job in words, for messages ("segmentation", "training").
    """

    def __init__(self, process, work: Path, what: str) -> None:
        self.process = process
        self.work = Path(work)
        self.what = what
        self.progress = 0.0
        self.status = f"{what.capitalize()} starting..."
        self.finishedBeforeCancel = False

    @property
    def state(self) -> str:
        return self.process.state

    def poll(self) -> list[dict]:
        """Read the process's new events, updating :attr:`progress` and :attr:`status`; returns them."""
        events = self.process.poll()
        for event in events:
            self._event(event)
        return events

    def _event(self, event: dict) -> None:
        """One progress event (subclasses)."""

    def cancel(self, wait: bool = True) -> None:
        """Stop the process and its children; nothing is written.

        A job whose process has already finished by itself (Cancel pressed between its end and the next
        poll) is not undone: its result waits in its folder, :meth:`finish` puts it into the scene and
        says that Cancel came too late. ``wait=False`` returns at once (a GUI must not freeze while the
        process tree gets its grace period); :attr:`state` is ``running`` until the tree has ended, and the
        temporary files go once it has.
        """
        if self.process.state == DONE:
            self.finishedBeforeCancel = True
            return
        self.process.cancel(wait=wait, then=self.cleanup)

    def finish(self):
        """Wait for the process, then put its result into the scene; :attr:`status` says what was done.

        Returns:
            The result: the segmentation node, or the model's path.

        Raises:
            Cancelled: the job was cancelled; nothing was changed.
            LungGANError: the process failed (its own message).
        """
        state = self.process.wait()
        try:
            if state != DONE:
                if self.process.cancelled:
                    raise Cancelled(f"{self.what} cancelled; {self._nothing_changed}")
                raise LungGANError(self.process.error)
            result = self._apply()
            if self.finishedBeforeCancel:
                self.status = f"Finished before Cancel was pressed. {self.status}"
            return result
        finally:
            self.cleanup()

    _nothing_changed = "nothing was changed"

    def _apply(self):
        """Put the result into the scene, set :attr:`status`, return the result (subclasses)."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Delete the temporary files (the job is over)."""
        shutil.rmtree(self.work, ignore_errors=True)


class SegmentationJob(Job):
    """Segmenting a CT volume node in the background; the segments go into the scene in :meth:`finish`.

    Args:
        scene: the MRML scene.
        volumeNode: the CT.
        process: ``lunggan segment`` on a copy of the CT, writing ``output``.
        output: the mask file the process writes.
        work: the temporary folder.
        segmentationNode: where the segments go (None: a new node).
        onExisting: ``add``, ``replace`` or ``new`` when that node already has segments.
        splitLungs: right and left lung (else one "lungs" segment).
        createLabelmap: also create a labelmap volume node.
        reviewPath: where the process writes its review (``--review``), or None.

    After :meth:`finish`: ``segmentation`` (the node), ``labelmap`` (or None), ``figures``
    (the lung report's figures) and ``figuresTable`` (their table node), and with ``reviewPath``
    ``review`` (the slices most likely wrong, :mod:`LungGANLib.segment.review`) and ``reviewTable``.
    """

    def __init__(self, scene, volumeNode, process, output: Path, work: Path, segmentationNode=None,
                 onExisting: str = "add", splitLungs: bool = True, createLabelmap: bool = False,
                 reviewPath: Path | None = None) -> None:
        super().__init__(process, work, "segmentation")
        self.scene, self.volumeNode, self.output = scene, volumeNode, Path(output)
        self.segmentationNode, self.onExisting = segmentationNode, onExisting
        self.splitLungs, self.createLabelmap = splitLungs, createLabelmap
        self.reviewPath = reviewPath
        self.segmentation = self.labelmap = self.figures = self.figuresTable = None
        self.review = self.reviewTable = None

    def _event(self, event: dict) -> None:
        if event.get("event") == "progress":
            done, total = event["done"], max(event["total"], 1)
            self.progress = done / total
            self.status = f"Segmenting: slice {done} of {total}..."

    def finish(self, segmentationNode=None, existing: str | None = None, createLabelmap: bool | None = None):
        """:meth:`Job.finish`; returns the segmentation node. The arguments are the old way (kept for one
        release) of choosing what :meth:`LungGANLib.slicer.mrml.LungGANLogic.startSegmentation` now takes."""
        if segmentationNode is not None or existing is not None or createLabelmap is not None:
            import warnings

            warnings.warn("give segmentationNode, onExisting and createLabelmap to startSegmentation; finish() "
                          "arguments go in the next release", DeprecationWarning, stacklevel=2)
            self.segmentationNode = segmentationNode if segmentationNode is not None else self.segmentationNode
            self.onExisting = existing if existing is not None else self.onExisting
            self.createLabelmap = createLabelmap if createLabelmap is not None else self.createLabelmap
        return super().finish()

    def _apply(self):
        from .mrml_figures import segmentation_figures
        from .mrml_review import as_sentence

        volume = ct_from_volume_node(self.volumeNode, force=True)
        labels = mask_from_image(sitk.ReadImage(str(self.output)), volume)
        self.segmentation, self.labelmap = write_segmentation(
            self.scene, labels, volume, self.volumeNode, self.segmentationNode, self.onExisting, not self.splitLungs,
            self.createLabelmap,
        )
        self.figures, self.figuresTable = segmentation_figures(self.scene, self.volumeNode, self.segmentation)
        flagged = ""
        if self.reviewPath is not None and Path(self.reviewPath).is_file():
            import json

            from .mrml_review import review_status, review_table

            self.review = json.loads(Path(self.reviewPath).read_text(encoding="utf-8"))
            self.reviewTable = review_table(self.scene, self.segmentation, self.review)
            flagged = review_status(self.review)
        said = set((self.review or {}).get("scan_flags", []))
        warned = "".join(f" {as_sentence(w)}" for w in self.warnings if w not in said)
        self.progress = 1.0
        self.status = f"Done: {', '.join(segment_names(self.segmentation))}.{flagged}{warned}"
        return self.segmentation

    @property
    def warnings(self) -> list[str]:
        """What the segmentation warned of (a lung lost and the classical method's mask written, a field of view
        that cuts the lungs, an implausible spacing or volume...), without the temporary copy's name before it."""
        copy = str(self.work)
        return [w.split(": ", 1)[1] if w.startswith(copy) and ": " in w else w for w in self.process.warnings]


class TrainingJob(Job):
    """Training in the background; finished epochs go into a plot as they come.

    Args:
        scene: the MRML scene (for the plot).
        process: ``lunggan train --config ...`` on copies of the training pairs.
        output: the model file the process writes.
        work: the temporary folder (pairs, settings, checkpoints).
        plot: where the epochs go; removed when the job is cancelled.
    """

    _nothing_changed = "no model was written"

    def __init__(self, scene, process, output: Path, plot: TrainingPlot, work: Path) -> None:
        super().__init__(process, work, "training")
        self.scene, self.output, self.plot = scene, Path(output), plot
        self.epochs: list[dict] = []

    def _event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "epoch":
            self.epochs.append(event)
            self.plot.add(SimpleNamespace(**event))
        elif kind == "step":
            done = (event["epoch"] - 1) * event["steps"] + event["step"]
            self.progress = done / max(event["epochs"] * event["steps"], 1)
            self.status = f"Epoch {event['epoch']}/{event['epochs']}: BCE {event['bce']:.4f}"

    def cancel(self, wait: bool = True) -> None:
        """Stop training: no model is written and the plot is removed (unless training had already finished)."""
        super().cancel(wait)
        if not self.finishedBeforeCancel:
            self.plot.remove(self.scene)

    def update(self) -> list[dict]:
        """The old name of :meth:`poll` (kept for one release)."""
        return self.poll()

    def _apply(self):
        self.progress = 1.0
        self.status = f"Model written to {self.output}; selected for segmentation."
        return self.output
