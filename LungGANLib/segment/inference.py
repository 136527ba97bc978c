"""Slice-by-slice lung segmentation with the generator, and the whole pipeline.

:func:`segment` is the one entry point for a CT volume: it runs the chosen method ("gan" or "classical") and the
shared post-processing and returns the right/left labels on the volume's canonical grid. :func:`segment_file` adds
reading and writing with the input's geometry; the command line and the Slicer module both call these.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import DEFAULT_CLASSICAL, ClassicalParams
from ..errors import InputError
from ..io.output import MASK_SUFFIXES, check_not_input, check_output_path, check_writable, mask_bytes, write_image
from ..io.volumes import CTVolume, load_ct, mask_to_image, suffix_of
from ..models import Generator
from ..models.device import DEVICES, resolve_device  # noqa: F401  (DEVICES, resolve_device: part of this module's interface)
from ..models.weights import ModelInfo, load_model
from .aerated import join_aerated
from .classical import airways_in_box, body_mask, remove_airways, segment_classical
from .domes import drop_domes
from .envelope import DEFAULT_ENVELOPE
from .fallback import shipped_model, unless_lung_is_lost, warn_if_empty, where_the_view_cuts
from .never_lung import never_lung, never_lung_figures, remove_never_lung
from .postprocess import postprocess_in_box
from .masses import join_masses, mass_finder
from .network_pass import (  # noqa: F401  (probability_batches, Progress: part of this module's interface)
    CPU_BATCH_SIZE, GPU_BATCH_SIZE, Progress, check_batch_fits, predict_probabilities, probability_batches,
)
from .preprocess import air_inside_per_slice, lung_frame, lung_slices, padding_told_from_air, wall_beside_a_cut_lung
from .report import warn_implausible
from .review import review_step
from .review_files import in_file_order, review_suffix, write_review
from .rim import OUTLINE_STEPS, grow_bases, grow_outline, trim_dense_rim
from .second_opinion import review_of, second_opinion_beside  # noqa: F401  (review_of: part of this module's interface)

logger = logging.getLogger(__name__)

#: The two ways to segment: the generator, or the classical threshold method.
METHODS = ("gan", "classical")


@dataclass
class SegmentOptions:
    """Options of :func:`segment` (the command line's flags).

    Attributes:
        method: ``"gan"`` (the generator) or ``"classical"``.
        model: weights file for ``gan``; None for the shipped model.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        batch_size: slices per forward pass; None picks 8 on the CPU (fastest
            in benchmarks/network.py on 2 cores) and 64 on a GPU.
        single_label: one label for both lungs.
        fill_holes: fill holes in each lung slice by slice.
        envelope: take back nodules that sit in dents of the lung's outline at
            the chest wall (the lesion-aware envelope, :mod:`LungGANLib.segment.envelope`).
        trim_rim: with ``gan``, take the outline off a one-voxel dense rim of pleura on
            aerated lung (:mod:`LungGANLib.segment.rim`).
        drop_domes: with ``gan``, take out islands of soft tissue that are the top of the
            liver's or the spleen's dome (:mod:`LungGANLib.segment.domes`).
        grow_outline: with ``gan``, move the outline out through the voxels around it below ``outline_hu``,
            up to ``outline_steps`` voxels (:func:`LungGANLib.segment.rim.grow_outline`).
        outline_steps: how far the outline may grow, in voxels.
        outline_hu: a voxel of the ring around the outline below this (HU) joins the lung as it grows; None:
            the lung threshold (``params.lung_threshold_hu``), above which the rim trim takes a voxel off.
        grow_bases: with ``gan``, carry the lungs down through the aerated voxels directly beneath them, up to
            10 mm (:func:`LungGANLib.segment.rim.grow_bases`): the thin bases a slice-wise generator misses.
        remove_airways: with ``gan``, take the trachea and the main bronchi out of the mask, as the classical
            method does (:func:`LungGANLib.segment.classical.airway_mask`): grown from the trachea, they are
            air beside the lungs that a generator can take for lung, and the outline growth would follow.
        keep_bronchi: with ``remove_airways`` and ``fill_holes``, each lung keeps what of the grown airways its hole
            filling takes: its lobar and segmental bronchi (:func:`LungGANLib.segment.classical.remove_airways`).
        join_aerated: with ``gan``, join to a lung the pieces of plainly aerated lung (1 mL or more, not air alone,
            not the airways) that its mask left out beside it (:mod:`LungGANLib.segment.aerated`).
        guard_rail: last, with either method, remove what the never-lung checks find: soft
            tissue outside the rib cage, below the diaphragm or in the posterior mediastinum
            (:mod:`LungGANLib.segment.never_lung`). Off, they are still found and reported.
        masses: with ``gan``, run the lesion model's generator as well and join the masses it finds beyond the lungs,
            2 cm across or more (:mod:`LungGANLib.segment.masses`). Off by default: the fold protocol did not choose it.
        mass_model: the generator that finds them; None: the shipped ``lunggan-lesions``.
        params: classical and post-processing parameters.
    """

    method: str = "gan"
    model: str | os.PathLike | None = None
    device: str = "auto"
    batch_size: int | None = None
    single_label: bool = False
    fill_holes: bool = True
    envelope: bool = True
    trim_rim: bool = True
    drop_domes: bool = True
    grow_outline: bool = True
    outline_steps: int = OUTLINE_STEPS
    outline_hu: float | None = None
    grow_bases: bool = True
    remove_airways: bool = True
    keep_bronchi: bool = True
    join_aerated: bool = True
    guard_rail: bool = True
    masses: bool = False
    mass_model: str | os.PathLike | None = None
    review: bool = False
    params: ClassicalParams = DEFAULT_CLASSICAL


def segment(
    volume: CTVolume,
    options: SegmentOptions | None = None,
    progress: Progress | None = None,
    model: tuple[Generator, ModelInfo] | None = None,
    findings: dict | None = None,
) -> np.ndarray:
    """Segment the lungs of a CT volume.

    Args:
        volume: the CT (see :func:`LungGANLib.io.load_ct`).
        options: method, model, device and post-processing options.
        progress: called with (done, total) slices.
        model: an already loaded generator, to skip loading it again.
        findings: a dict to receive the never-lung checks' findings on the method's mask, before
            the guard rail (:func:`never_lung_figures`' keys), or None.

    Returns:
        uint8 (z, y, x) labels on the canonical grid: 1 right lung, 2 left lung
        (1 for both with ``single_label``), all 0 when no lungs were found.

    Raises:
        InputError: unknown method or device. ModelError: bad model file.

    Example:
        >>> ct = load_ct("../shared/data/ct/elastix-00.nii.gz")
        >>> labels = segment(ct, SegmentOptions(method="gan", device="cpu"))
    """
    options = options or SegmentOptions()
    if options.method not in METHODS:
        raise InputError(f"unknown method {options.method!r}: use one of {', '.join(METHODS)}")
    with padding_told_from_air(volume.array):  # put back before it returns
        return _segment(volume, options, progress, model, findings)


def _segment(volume: CTVolume, options: SegmentOptions, progress, model, findings) -> np.ndarray:
    """:func:`segment`, with the padding told from air."""
    hu = volume.array
    beside = None  # the review's second opinion, worked out beside the post-processing
    held: dict = {}  # the classical method's mask, where a fallback needs it, and what the fallbacks said
    if options.method == "classical":
        found_by_classical: dict = {}
        labels = segment_classical(
            hu, volume.spacing, options.params, single_label=options.single_label, fill_holes=options.fill_holes,
            envelope=options.envelope, found=found_by_classical,
        )
        airways = found_by_classical["airways"]
        if progress:
            progress(hu.shape[0], hu.shape[0])
    else:
        device = resolve_device(options.device)
        generator, info = model if model is not None else load_model(options.model, device)
        generator = generator.to(device)
        body = body_mask(hu, options.params)  # a threshold above air: scanner padding needs no clipping
        air_inside = air_inside_per_slice(hu, body)
        todo = lung_slices(hu, body, air_inside=air_inside)
        aerated_ml = float(air_inside.sum()) * volume.voxel_volume_ml  # to tell when the generator lost lung
        # Before the generator's mask exists: the airway search's temporaries and the mask are never held together.
        airways = airways_in_box(hu, body, volume.spacing, options.params) if options.remove_airways else None
        logger.info("generator on %s: %d of %d slices can hold lung", device, len(todo), hu.shape[0])
        batch_size = options.batch_size or (CPU_BATCH_SIZE if device.type == "cpu" else GPU_BATCH_SIZE)
        check_batch_fits(batch_size, info, device)
        shown, (top, left), cut, near = wall_beside_a_cut_lung(hu, body, volume.spacing)  # a lung the view cuts, nears
        frame = lung_frame(hu, body, todo, shown.shape[1:], (top, left)) if shipped_model(options) else None
        mask = predict_probabilities(shown, generator, info, device, batch_size, todo, progress, volume.spacing[2],
                                     frame)
        mask = np.ascontiguousarray(mask[:, top : top + hu.shape[1], left : left + hu.shape[2]])
        found = _masses_found(shown, options, device, batch_size, todo, volume.spacing[2], frame, hu, body, (top, left))
        del shown
        mask &= body
        if options.review and findings is not None:  # the body on the review's grid, not found again
            step = review_step(volume.spacing)
            beside = second_opinion_beside(volume, options, airways,
                                           body if step == 1 else np.ascontiguousarray(body[:, ::step, ::step]))
        del body  # a volume's worth of memory the post-processing can use
        if airways is not None:
            mask[airways[0]] &= ~airways[1]

        threshold = options.params.lung_threshold_hu
        outline_hu = threshold if options.outline_hu is None else options.outline_hu

        def generator_steps(part: np.ndarray, hu_part: np.ndarray) -> None:
            if options.drop_domes:
                drop_domes(part, hu_part, volume.spacing, threshold)
            if options.trim_rim:
                trim_dense_rim(part, hu_part, threshold)
            if options.grow_outline:
                grow_outline(part, hu_part, below_hu=outline_hu, steps=options.outline_steps)

        only = [mask]  # handed over: the post-processing frees the whole-scan mask once it has its crop
        del mask
        labels = postprocess_in_box(
            only, hu, volume.spacing, options.params, fill_holes=options.fill_holes,
            envelope=DEFAULT_ENVELOPE if options.envelope else None,
            then=generator_steps, then_reach=options.outline_steps if options.grow_outline else 0,
        )
        if options.grow_bases:
            grow_bases(labels, hu, volume.spacing, outline_hu, airways=airways)
        if airways is not None:  # what the outline growth took of them; the bronchi inside a lung go back
            remove_airways(labels, airways, volume.spacing, options.keep_bronchi and options.fill_holes)
        if options.join_aerated:
            join_aerated(labels, hu, volume.spacing, airways)
        if options.single_label:  # only now: each lung's bronchi are found with its own holes
            labels[labels > 0] = 1
        labels = where_the_view_cuts(labels, volume, options, cut, near, held)
        labels = unless_lung_is_lost(labels, volume, options, aerated_ml, held)
        if found is not None:
            joined = join_masses(labels, found, volume.spacing) * volume.voxel_volume_ml
            del found
            if joined:
                logger.info("%s: %.1f mL of masses the lesion model finds joined the lungs", volume.source or "the volume", joined)
    found = (remove_never_lung if options.guard_rail else never_lung)(labels, hu, volume.spacing)
    if options.review and findings is not None:
        if options.method == "classical":  # the generator's mask is its second opinion
            beside = generator_opinion(volume, options, model)
        findings["review"] = review_of(labels, volume, options, found if options.guard_rail else None, airways,
                                       other=beside, said=held.get("said"))
    figures = never_lung_figures(found, volume.voxel_volume_ml)
    if figures["never_lung_ml"]:
        logger.info("%s: %s %s", volume.source or "the volume", "removed" if options.guard_rail else "found (kept, no guard rail)",
                    figures["never_lung_where"])
    if findings is not None:
        findings.update(figures)
    warn_implausible(labels, volume)
    warn_if_empty(labels, volume, options)
    return labels


def generator_opinion(volume: CTVolume, options: SegmentOptions, model=None) -> np.ndarray:
    """The generator's labels of ``volume`` (the whole default pipeline of ``options.model``, None: the shipped one;
    ``model``: it, already loaded): the review's second opinion on the classical method's mask, as the classical
    method is the generator's (:mod:`~.second_opinion`).

    Its own flags see soft tissue a classical mask takes in, but not partly aerated tissue at the hilum it holds
    (cip-ct-64: 11 mL, median -264 HU), which the generator leaves out. It costs a generator's segmentation, more
    than the classical method's own (``docs/review.md``). What the generator's pipeline would log (the fallbacks'
    warnings, the guard rail) is about a mask that is not written, so it is not said.
    """
    with _quiet(logging.getLogger("LungGANLib")):
        return segment(volume, replace(options, method="gan", review=False, masses=False), model=model)


@contextmanager
def _quiet(logger: logging.Logger):
    """Nothing below an error from ``logger`` (and those under it) while in the block."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _masses_found(shown, options, device, batch_size, todo, slice_mm, frame, hu, body, corner) -> np.ndarray | None:
    """The mask of the generator that finds masses (:func:`~.masses.mass_finder`) on the CT's grid, or None."""
    finder = mass_finder(options, device)
    if finder is None:
        return None
    generator, info, shipped = finder
    if shipped and frame is None:
        frame = lung_frame(hu, body, todo, shown.shape[1:], corner)
    found = predict_probabilities(shown, generator, info, device, batch_size, todo, None, slice_mm, frame if shipped else None)
    (top, left), (rows, cols) = corner, hu.shape[1:]
    return np.ascontiguousarray(found[:, top : top + rows, left : left + cols]) & body


@dataclass
class SegmentResult:
    """What :func:`segment_file` did: the output path, the lung volumes in mL and the report's figures."""

    output: Path
    right_ml: float
    left_ml: float
    empty: bool
    figures: dict = field(default_factory=dict)


def model_name(options: SegmentOptions) -> str:
    """How a run's model is named in reports and DICOM SEG: the weights' file stem, or ``classical``."""
    from ..models.weights import DEFAULT_MODEL

    if options.method == "classical":
        return "classical"
    return Path(options.model).stem if options.model else DEFAULT_MODEL.stem


def segment_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    options: SegmentOptions | None = None,
    overwrite: bool = False,
    force: bool = False,
    series: str | None = None,
    progress: Progress | None = None,
    model: tuple[Generator, ModelInfo] | None = None,
    review_path: str | os.PathLike | None = None,
) -> SegmentResult:
    """Read a CT, segment its lungs and write the mask with the input's geometry.

    The output is checked before any work (exists without ``overwrite``, bad
    folder or ending; a ``.dcm`` DICOM SEG for an input that is not DICOM)
    and written atomically, so a failure leaves no file.

    Args:
        model: an already loaded generator (batches load it once).
        review_path: also write where to look (:mod:`LungGANLib.segment.review`) to this ``.json``/``.csv``
            file, its slice indices along the mask's third voxel axis; the figures gain
            ``review_flagged_slices``.

    Raises:
        LungGANError subclasses with a message for the user.
    """
    from ..io.dicom_seg import write_seg
    from .report import lung_figures

    options = options or SegmentOptions()
    output = check_output_path(output_path, overwrite, MASK_SUFFIXES)
    check_not_input(output, input_path)
    is_seg = suffix_of(output) == ".dcm"
    volume = load_ct(input_path, series=series, force=force)
    if is_seg and not volume.dicom_files:
        raise InputError(
            f"{input_path} is not DICOM, and a DICOM SEG must refer to the CT's DICOM instances: "
            "segment the DICOM series folder, or write .nii.gz/.nrrd"
        )
    check_writable(output.parent, mask_bytes(volume.array.size, output))  # before the work, not after
    if review_path is not None:
        review_suffix(review_path)
        check_output_path(review_path, overwrite, (".json", ".csv"), what="review")
        check_not_input(Path(review_path), input_path)
        options = replace(options, review=True)
    findings: dict = {}
    labels = segment(volume, options, progress, model, findings)
    review = findings.pop("review", None)
    figures = lung_figures(volume.array, labels, volume.voxel_volume_ml, options.single_label) | findings
    if review is not None:
        figures["review_flagged_slices"] = review.flagged
        in_file_order(review, volume.orientation, labels.shape[0])
    if is_seg:
        write_seg(output, labels, volume, model_name(options), options.single_label, overwrite)
    else:
        # The figures are taken: the CT's HU and then the labels (the image holds its own copy) go before the
        # image is made, written and read back to be verified (a 1200-slice scan: 630 and 315 MB less).
        volume = volume.without_voxels()
        image = mask_to_image(labels, volume)
        del labels
        write_image(image, output, overwrite=overwrite, nifti_forms=volume.nifti_forms)
    if review is not None:
        figures["review_file"] = str(write_review(review, review_path, overwrite))
    # The volumes come from the report's figures (no second count): with one label, all of it is label 1.
    if options.single_label:
        right, left = figures["total_lung_ml"], 0.0
    else:
        right, left = figures["right_lung_ml"], figures["left_lung_ml"]
    return SegmentResult(output, right, left, figures["total_lung_ml"] == 0, figures)
