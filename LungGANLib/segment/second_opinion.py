"""The review of a segmentation (:mod:`LungGANLib.segment.review`) and its second opinion: for a generator's mask the
classical method on the same CT, worked out on a thread of its own while the generator's mask is post-processed (for
the classical method's mask, the generator's: :func:`LungGANLib.segment.inference.generator_opinion`).

The second opinion needs only the CT, the body and the airways, all found before the network runs, so it does not
wait for the generator's mask; it begins once the network is done (not to compete with its threads). scipy's
labelling, distance maps and numpy's array operations, where it spends its time, let go of Python's lock, and the
post-processing beside it keeps one core busy: on a 2-core machine the review's cost on elastix-00 fell by about a
third (``docs/benchmarks.md``). Its labels (a byte a voxel of the review's grid) are held until the review.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from ..io.volumes import CTVolume
from .classical import airways_in_box, airways_on_grid, body_mask, segment_classical
from .review import Review, review_grid, review_slices, review_step


def second_opinion(volume: CTVolume, options, airways=None, body=None) -> np.ndarray | None:
    """The classical method's labels of ``volume`` on the review's grid, for a generator's mask; None for the
    classical method's own mask, whose second opinion the segmentation works out
    (:func:`LungGANLib.segment.inference.generator_opinion`) and hands to :func:`review_of`. ``options``: the segmentation's
    (:class:`LungGANLib.segment.inference.SegmentOptions`). ``airways``: those left out of the mask (box
    and mask on the full grid); ``body``: the patient's body on the review's grid (None: found again).

    It runs on the review's grid (pixels up to 1.5 mm: :func:`LungGANLib.segment.review.review_step`) with the
    airways found on the full grid (on a coarser one their growth leaks through the bronchial walls into the
    hilum): those taken out of the mask, or grown for it when the mask keeps them. Neither the envelope nor the
    guard rail is run on it: the envelope was half of its cost and changes a few flags (a nodule at
    lidc-idri-0001's chest wall); the guard rail removes soft tissue, which a threshold mask hardly holds (0.5 mL
    at most on the shared scans).
    """
    if options.method != "gan":
        return None
    step = review_step(volume.spacing)
    hu, spacing = review_grid(volume.array, volume.spacing, step)
    grown = airways if airways is not None or step == 1 else \
        airways_in_box(volume.array, body_mask(volume.array, options.params), volume.spacing, options.params)
    known = None if grown is None else airways_on_grid(grown, hu.shape, step)  # not grown again
    # Specks are judged at the scan's own pixels (ClassicalParams.speck_mm), as the classical method judges them there.
    params = replace(options.params, speck_mm=options.params.speck_mm * step)
    return segment_classical(hu, spacing, params, single_label=options.single_label,
                             fill_holes=options.fill_holes, envelope=False, airways=known, body=body)


def second_opinion_beside(volume: CTVolume, options, airways=None, body=None) -> Future:
    """:func:`second_opinion` started on a thread of its own; its ``result()`` is the labels (or raises what it
    raised)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lunggan-second-opinion")
    try:
        return pool.submit(second_opinion, volume, options, airways, body)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one task


def review_of(
    labels: np.ndarray, volume: CTVolume, options, removed, airways=None, body=None,
    other: Future | np.ndarray | None = None, said: list[str] | None = None,
) -> Review:
    """Where to look in ``labels`` (:mod:`LungGANLib.segment.review`), indices on the canonical grid; ``removed``:
    what the guard rail removed (None: it did not run); ``airways``: those left out of the mask (box and mask);
    ``body``: the patient's body on the review's grid, found for the segmentation (None: found again);
    ``other``: the second opinion already started (:func:`second_opinion_beside`) or worked out (labels: for the
    classical method's mask, the generator's), or None to work it out here (none for a classical mask);
    ``said``: what the fallbacks said (:mod:`~.fallback`: a field of view that cuts the lungs, the classical method's
    lung taken where the generator lost lung), the whole-scan flags, or None.
    """
    if isinstance(other, Future):
        other = other.result()
    elif other is None:
        other = second_opinion(volume, options, airways, body)
    name = "the classical method" if options.method == "gan" else "the generator"
    review = review_slices(labels, volume.array, volume.spacing, removed=removed, single_label=options.single_label,
                           other=other, other_name=name, step=review_step(volume.spacing), airways=airways)
    review.scan.extend(said or [])
    return review
