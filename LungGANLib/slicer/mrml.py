"""LungGAN in a Slicer scene: :class:`LungGANLogic`, the logic the Slicer module and the Python console use.

>>> logic = LungGANLogic()                  # slicer.mrmlScene, or pass a scene
>>> segmentation = logic.segment(volumeNode) # "right lung" and "left lung" segments

Only ``mrml``, ``mrml_nodes`` (nodes <-> arrays) and ``mrml_figures`` (the lung
report's table) of LungGANLib import ``slicer``. They use only what the PyPI
package ``slicer-core`` provides, so they run, and are tested, without the
Slicer application. The node helpers are imported here too, so that
``LungGANLib.slicer.mrml`` is the one module the Slicer module and scripts need.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import SimpleITK as sitk
import slicer

from ..errors import InputError, LungGANError, OutputExistsError  # noqa: F401  (LungGANError: part of this module's interface)
from ..io.output import check_output_path
from ..io.volumes import mask_to_image
from .jobs import SegmentationJob, TrainingJob, segment_arguments  # noqa: F401  (part of this module's interface)
from .mrml_nodes import (  # noqa: F401  (part of this module's interface)
    GENERATED_TAG,
    LUNG_COLOUR,
    ON_EXISTING,
    SEGMENT_NAMES,
    SINGLE_SEGMENT_NAME,
    TERMINOLOGY,
    Cancelled,
    TrainingPlot,
    ct_from_volume_node,
    ensure_segmentation_converters,
    image_from_volume_node,
    labels_from_segmentation,
    load_ct_node,
    same_geometry,
    segment_names,
    set_volume_node_image,
    temporary_nodes,
    write_segmentation,
)

logger = logging.getLogger(__name__)


# -- the logic ----------------------------------------------------------------------------------


#: The old name of ``ON_EXISTING`` (kept for one release).
EXISTING = ON_EXISTING


def _renamed(old_value, old_name: str, value, name: str):
    """A keyword given under its old name: used, with a DeprecationWarning (old names live for one release)."""
    if old_value is None:
        return value
    warnings.warn(f"'{old_name}' is now '{name}'; the old name goes in the next release", DeprecationWarning, stacklevel=3)
    return old_value


def default_model_dir() -> Path:
    """Where models trained in Slicer go by default: ``~/LungGAN/models``."""
    return Path.home() / "LungGAN" / "models"


class LungGANLogic:
    """Segment lungs and train LungGAN models on MRML nodes. Works without the widget.

    Args:
        scene: the MRML scene (default: ``slicer.mrmlScene``).

    Example:
        >>> logic = LungGANLogic()
        >>> segmentation = logic.segment(volumeNode)
        >>> model = logic.train([(volumeNode, segmentation)], variant="regression", epochs=5)
    """

    def __init__(self, scene=None) -> None:
        self.scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
        if self.scene is None:
            raise RuntimeError("no MRML scene: pass one (LungGANLogic(scene)) outside the Slicer application")

    def loadCT(self, path: str | os.PathLike, name: str | None = None):
        """Read a CT file or DICOM folder into a new scalar volume node."""
        return load_ct_node(self.scene, path, name)

    # -- segmentation ---------------------------------------------------------------------------

    def segment(
        self,
        volumeNode,
        segmentationNode=None,
        model: str | None = None,
        device: str = "auto",
        splitLungs: bool = True,
        fillHoles: bool = True,
        createLabelmap: bool = False,
        onExisting: str = "add",
        method: str = "gan",
        progress: Callable[[int, int], None] | None = None,
        shouldCancel: Callable[[], bool] | None = None,
        existing: str | None = None,
        masses: bool = False,
    ):
        """Segment the lungs of a CT volume node, in this process.

        Args:
            volumeNode: the CT (``vtkMRMLScalarVolumeNode``, HU).
            segmentationNode: where the segments go (None: a new node).
            model: generator weights (None: the shipped model).
            device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
            splitLungs: right and left lung segments (else one "lungs" segment).
            fillHoles: vessels and nodules inside the lung count as lung.
            createLabelmap: also create a labelmap volume node.
            onExisting: ``add``, ``replace`` or ``new`` when the output already has segments.
            method: ``gan`` (the generator) or ``classical``.
            progress: called with (done, total) slices.
            shouldCancel: polled with each progress report; True stops and changes nothing.
            existing: the old name of ``onExisting`` (kept for one release).
            masses: also join the masses the lesion model finds and the default leaves out (``--masses``,
                :mod:`LungGANLib.segment.masses`; one more network pass).

        Returns:
            The segmentation node (its labelmap node is ``logic.lastLabelmapNode``, the lung
            figures ``logic.lastFigures`` and their table node ``logic.lastFiguresTable``).

        Raises:
            InputError / ModelError: bad input, with a message for the user.
            Cancelled: ``shouldCancel`` returned True; the scene is unchanged.
        """
        from ..segment.inference import SegmentOptions, segment

        onExisting = _renamed(existing, "existing", onExisting, "onExisting")
        volume = ct_from_volume_node(volumeNode)

        def report(done: int, total: int) -> None:
            if shouldCancel and shouldCancel():
                raise Cancelled("segmentation cancelled; nothing was changed")
            if progress:
                progress(done, total)

        options = SegmentOptions(method=method, model=model, device=device, single_label=not splitLungs, fill_holes=fillHoles,
                                 masses=masses)
        labels = segment(volume, options, report)
        if shouldCancel and shouldCancel():
            raise Cancelled("segmentation cancelled; nothing was changed")
        node, self.lastLabelmapNode = write_segmentation(
            self.scene, labels, volume, volumeNode, segmentationNode, onExisting, not splitLungs, createLabelmap
        )
        self.lastFigures = self.lungFigures(volumeNode, node)
        return node

    def lungFigures(self, volumeNode, segmentationNode, table: bool = True) -> dict:
        """The lung report's figures of a LungGAN segmentation as it is now (edits included).

        The same figures as ``lunggan segment --report`` (see :mod:`LungGANLib.segment.report`):
        ``right_lung_ml``, ``right_lung_mean_hu``, ``right_lung_laa950_percent``, ... for
        the right lung, the left lung and both (``total_lung_*``), from the last lung
        segments LungGAN made and the CT's HU. ``table`` also writes them into the
        segmentation's table node (``logic.lastFiguresTable``), reused on later calls.

        The HU are the CT's the segmentation was made on (its source volume, the reference
        LungGAN sets), whichever ``volumeNode`` is given; ``volumeNode`` counts only for a
        segmentation without one in the scene (``logic.lastFiguresVolume`` says which was used).

        Raises:
            InputError: the segmentation holds no LungGAN lung segments, or no CT to measure on.
        """
        from .mrml_figures import segmentation_figures
        from .mrml_nodes import source_volume

        volumeNode = source_volume(segmentationNode, volumeNode)
        if volumeNode is None:
            raise InputError(f"{segmentationNode.GetName()} refers to no CT in the scene: choose the CT it was made on")
        self.lastFiguresVolume = volumeNode
        figures, node = segmentation_figures(self.scene, volumeNode, segmentationNode, table)
        if table:
            self.lastFiguresTable = node
        return figures

    def reviewSlices(self, volumeNode, segmentationNode) -> dict:
        """Where to look in a LungGAN segmentation as it is now: every slice with lung, most suspicious first, with
        its score and reasons (:mod:`LungGANLib.segment.review`; indices along the CT's K axis), also written into
        the segmentation's review table (``logic.lastReviewTable``). InputError: no LungGAN lung segments."""
        from .mrml_review import review_segmentation

        result, self.lastReviewTable = review_segmentation(self.scene, volumeNode, segmentationNode)
        return result

    def startSegmentation(
        self,
        volumeNode,
        model: str | None = None,
        device: str = "auto",
        splitLungs: bool = True,
        fillHoles: bool = True,
        segmentationNode=None,
        onExisting: str = "add",
        createLabelmap: bool = False,
        existing: str | None = None,
        review: bool = True,
        masses: bool = False,
    ) -> SegmentationJob:
        """Start segmenting in a background process; poll the returned job, then ``job.finish()``.

        The arguments are those of :meth:`segment`; the scene changes only in ``job.finish()``.
        With ``review`` the job also finds the slices most likely wrong (``job.review``) and puts
        them in a table node referenced by the segmentation (``job.reviewTable``).
        """
        from .background import BackgroundProcess

        onExisting = _renamed(existing, "existing", onExisting, "onExisting")
        work = Path(tempfile.mkdtemp(prefix="LungGAN-"))
        image = image_from_volume_node(volumeNode)
        ct_path, out_path = work / "ct.nrrd", work / "lungs.nrrd"
        sitk.WriteImage(image, str(ct_path), useCompression=False)
        review_path = work / "review.json" if review else None
        args = segment_arguments(ct_path, out_path, device, model, splitLungs, fillHoles, masses, review_path)
        return SegmentationJob(self.scene, volumeNode, BackgroundProcess(args), out_path, work, segmentationNode,
                               onExisting, splitLungs, createLabelmap, review_path)

    # -- training -------------------------------------------------------------------------------

    @staticmethod
    def trainingConfig(variant: str = "baseline", epochs: int = 5, fineTune: bool = True,
                       stepsPerEpoch: int | None = None, seed: int = 0):
        """The settings of a training started in Slicer, validated: the same for :meth:`train` and
        :meth:`startTraining` (which passes them to its process as a JSON file).

        Fine-tuning starts from the shipped model with its architecture and input size, at a gentle
        learning rate (1e-4); from scratch, the defaults of ``lunggan train``.

        Returns:
            (:class:`~LungGANLib.train.trainer.TrainConfig`, the model to start from or None).

        Raises:
            InputError: settings that cannot train (an unknown variant, say).
        """
        from ..models.weights import DEFAULT_MODEL, load_model
        from ..train.train_config import TrainConfig

        settings = dict(variant=variant, epochs=epochs, seed=seed, steps_per_epoch=stepsPerEpoch)
        init = str(DEFAULT_MODEL) if fineTune else None
        if init:
            info = load_model(init)[1]
            settings.update(generator=info.config, input_size=info.input_size, context_mm=info.context_mm, lr=1e-4)
        try:
            config = TrainConfig(**settings)
            config.validate()
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return config, init

    def train(
        self,
        pairs: Sequence[tuple],
        variant: str = "baseline",
        epochs: int = 5,
        output: str | os.PathLike | None = None,
        fineTune: bool = True,
        device: str = "auto",
        stepsPerEpoch: int | None = None,
        overwrite: bool = False,
        plot: bool = True,
        progress: Callable[[int, int, object], None] | None = None,
        onEpoch: Callable[[object], None] | None = None,
        shouldCancel: Callable[[], bool] | None = None,
        seed: int = 0,
    ) -> str:
        """Train (or fine-tune) a generator on annotated volumes, in this process.

        Args:
            pairs: (CT volume node, segmentation or labelmap node) pairs; any segment counts as lung.
            variant: ``baseline`` or a critic: ``basic``, ``product``, ``early-fusion``,
                ``late-fusion``, ``regression``.
            epochs: passes over the slices.
            output: model file to write (``.safetensors``); default ``~/LungGAN/models/<variant>-<n>.safetensors``.
            fineTune: start from the shipped model (else from scratch); see :meth:`trainingConfig`.
            device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
            stepsPerEpoch: at most this many steps per epoch (None: all slices).
            overwrite: replace ``output`` if it exists.
            plot: show the losses in a ``vtkMRMLPlotChartNode`` as epochs finish.
            progress: called with (step, steps, losses) after each step.
            onEpoch: called with each epoch's record.
            shouldCancel: polled after each step; True stops, writes no model and removes the plot.
            seed: seeds weights, shuffling, augmentation and the validation share.

        A fixed share of the slices (:data:`LungGANLib.train.datasets.VALIDATION_FRACTION`) is held out to
        choose the best epoch, as ``lunggan train`` and :meth:`startTraining` do.

        Returns:
            The model path; select it for :meth:`segment` with ``model=``.

        Raises:
            InputError: no pairs, mismatched pairs, an existing output, bad settings.
            Cancelled: ``shouldCancel`` returned True.
        """
        from ..train.datasets import (
            VALIDATION_FRACTION,
            prepare_slices,
            split_validation,
        )
        from ..train.trainer import Trainer, export_model

        output = self._model_output(pairs, output, variant, overwrite)
        config, init = self.trainingConfig(variant, epochs, fineTune, stepsPerEpoch, seed)
        loaded = []
        for volume_node, mask_node in pairs:
            volume = ct_from_volume_node(volume_node)
            loaded.append((volume, labels_from_segmentation(mask_node, volume_node, volume)))
        slices = prepare_slices(loaded, config.input_size, context_mm=config.context_mm)
        train, val = split_validation(slices, VALIDATION_FRACTION, config.seed)
        run_dir = Path(tempfile.mkdtemp(prefix="LungGAN-train-"))
        trainer = Trainer(config, run_dir, device, init)
        trainingPlot = TrainingPlot.create(self.scene, output.stem) if plot else None

        def on_step(step, steps, losses):
            if shouldCancel and shouldCancel():
                raise Cancelled("training cancelled; no model was written")
            if progress:
                progress(step, steps, losses)

        def on_epoch(record):
            if trainingPlot:
                trainingPlot.add(record)
            if onEpoch:
                onEpoch(record)

        card = {"name": output.stem, "data": {"train": [v.GetName() for v, _ in pairs]}, "fine_tuned_from": init}
        try:
            best = trainer.fit(train, val, card, on_step, on_epoch)
            export_model(best, output)
        except Cancelled:
            if trainingPlot:
                trainingPlot.remove(self.scene)
            raise
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints of a finished or cancelled run
        self.lastPlot = trainingPlot
        return str(output)

    def startTraining(self, pairs: Sequence[tuple], variant: str = "baseline", epochs: int = 5,
                      output: str | os.PathLike | None = None, fineTune: bool = True, device: str = "auto",
                      stepsPerEpoch: int | None = None, overwrite: bool = False, seed: int = 0) -> TrainingJob:
        """Start :meth:`train`'s training in a background process; poll the returned job, then ``job.finish()``.

        The pairs go to a temporary folder as NRRD, the settings (:meth:`trainingConfig`) as a JSON file.
        """
        import json

        from .background import BackgroundProcess

        output = self._model_output(pairs, output, variant, overwrite)
        config, init = self.trainingConfig(variant, epochs, fineTune, stepsPerEpoch, seed)
        work = Path(tempfile.mkdtemp(prefix="LungGAN-train-"))
        settings = work / "config.json"
        settings.write_text(json.dumps(config.to_dict(), indent=2))
        args = ["train", "--config", settings, "--run-dir", work / "run", "-o", output, "--device", device, "--progress-json"]
        for index, (volume_node, mask_node) in enumerate(pairs):
            volume = ct_from_volume_node(volume_node)
            labels = labels_from_segmentation(mask_node, volume_node, volume)
            ct_path, mask_path = work / f"ct{index}.nrrd", work / f"mask{index}.nrrd"
            sitk.WriteImage(image_from_volume_node(volume_node), str(ct_path))
            sitk.WriteImage(mask_to_image(labels, volume), str(mask_path))
            args += ["--pair", ct_path, mask_path]
        if init:
            args += ["--init-model", init]
        if overwrite:
            args.append("--overwrite")
        return TrainingJob(self.scene, BackgroundProcess(args), output, TrainingPlot.create(self.scene, output.stem), work)

    def _model_output(self, pairs: Sequence[tuple], output: str | os.PathLike | None, variant: str, overwrite: bool) -> Path:
        """Check a training request's pairs and output model path (default: a new name); create its folder."""
        if not pairs:
            raise InputError("training needs at least one (CT volume, segmentation) pair")
        output = Path(output) if output else self._new_model_path(variant)
        if output.suffix == ".safetensors":
            output.parent.mkdir(parents=True, exist_ok=True)  # the model folder is made for the user, as Slicer's dialogs do
        return check_output_path(output, overwrite, (".safetensors",), what="model")

    @staticmethod
    def _new_model_path(variant: str) -> Path:
        folder = default_model_dir()
        n = 1
        while (folder / f"{variant}-{n}.safetensors").exists():
            n += 1
        return folder / f"{variant}-{n}.safetensors"
