"""DICOM Segmentation (SEG) output, written with highdicom.

A SEG refers to the CT instances it was made from, so it can only be written
for a DICOM input: :func:`write_seg` takes the lung labels on the volume's
canonical grid and the files the volume was read from. The right and left lung
are two binary segments, SNOMED CT 39607008 "Lung" with the laterality
modifiers 24028007 "Right" and 7771000 "Left" (one "Lung" segment without
laterality with ``--single-label``), made by the algorithm "LungGAN" of this
version with the model named in its parameters. Patient and study attributes
are carried over from the source by highdicom.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, LungGANError, OutputError
from .output import atomic_write
from .volumes import CTVolume, mask_to_image

#: Slices whose position is further than this from the mask's grid (voxels) do not fit it.
POSITION_TOLERANCE_VOXELS = 0.05

_ANATOMICAL_STRUCTURE = ("123037004", "SCT", "Anatomical Structure")
_LUNG = ("39607008", "SCT", "Lung")
_LATERALITY = {"right lung": ("24028007", "SCT", "Right"), "left lung": ("7771000", "SCT", "Left")}


def _source_datasets(files: tuple[str, ...]) -> list:
    import pydicom

    datasets = []
    for name in files:
        try:
            datasets.append(pydicom.dcmread(name, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises many types for a broken file
            raise InputError(f"could not read the source DICOM file {name} again for the SEG: {exc}") from None
    return datasets


def frames_by_instance(labels_image: sitk.Image, datasets: list) -> np.ndarray:
    """The mask's slice that each source instance shows, found by its ImagePositionPatient.

    Args:
        labels_image: the mask in the input's geometry (as written to NIfTI).
        datasets: the source instances.

    Returns:
        (instances, rows, columns) labels, in the order of ``datasets``.

    Raises:
        InputError: an instance lies off the mask's grid (gaps or uneven slices).
    """
    array = sitk.GetArrayViewFromImage(labels_image)
    frames = np.empty((len(datasets), *array.shape[1:]), dtype=np.uint8)
    for n, ds in enumerate(datasets):
        position = getattr(ds, "ImagePositionPatient", None)
        if position is None:
            raise InputError(f"source instance {ds.SOPInstanceUID} has no position: cannot write a DICOM SEG")
        if (int(ds.Rows), int(ds.Columns)) != array.shape[1:]:
            raise InputError(
                f"source instance {ds.SOPInstanceUID} is {ds.Rows} x {ds.Columns} pixels, the mask's grid "
                f"{array.shape[1]} x {array.shape[2]} (a tilted gantry series is resampled onto a wider grid): "
                "cannot write a DICOM SEG; write .nii.gz instead"
            )
        index = labels_image.TransformPhysicalPointToContinuousIndex([float(v) for v in position])
        k = int(round(index[2]))
        if max(abs(index[0]), abs(index[1]), abs(index[2] - k)) > POSITION_TOLERANCE_VOXELS or not 0 <= k < array.shape[0]:
            raise InputError(
                f"source instance {ds.SOPInstanceUID} lies off the volume's slice grid (uneven or missing slices, a tilted gantry?): "
                "cannot write a DICOM SEG; write .nii.gz instead"
            )
        frames[n] = array[k]
    return frames


def _code(code: tuple[str, str, str]):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=code[0], scheme_designator=code[1], meaning=code[2])


def segment_descriptions(names: list[str], algorithm):
    """One SegmentDescription per segment name ("right lung", "left lung" or "lungs")."""
    from highdicom.seg import SegmentAlgorithmTypeValues, SegmentDescription

    descriptions = []
    for number, name in enumerate(names, start=1):
        description = SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=_code(_ANATOMICAL_STRUCTURE),
            segmented_property_type=_code(_LUNG),
            algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        if name in _LATERALITY:
            # highdicom has no parameter for the modifier; it sits inside the type's code item (PS3.3 C.8.20-4).
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                _code(_LATERALITY[name])
            ]
        descriptions.append(description)
    return descriptions


def build_seg(labels: np.ndarray, volume: CTVolume, model_name: str, single_label: bool = False):
    """The SEG dataset of lung labels (canonical grid) for a volume read from DICOM.

    Raises:
        InputError: the volume was not read from DICOM, or its slices do not fit its grid.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .. import __version__

    if not volume.dicom_files:
        raise InputError(
            f"a DICOM SEG refers to the source DICOM instances, and {volume.source} is not DICOM: "
            "give the DICOM series folder, or write .nii.gz/.nrrd"
        )
    datasets = _source_datasets(volume.dicom_files)
    frames = frames_by_instance(mask_to_image(labels, volume), datasets)
    names = ["lungs"] if single_label else ["right lung", "left lung"]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="LungGAN", family=codes.cid7162.ArtificialIntelligence, version=__version__,
        parameters={"model": model_name},
    )
    source = datasets[0]
    series_number = int(source.SeriesNumber) if str(source.get("SeriesNumber", "")).strip().isdigit() else 0
    with warnings.catch_warnings():
        # highdicom warns about the source's own attributes (a one-part patient name): not the user's to fix here.
        warnings.simplefilter("ignore", UserWarning)
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(names, algorithm),
            series_instance_uid=hd.UID(),
            series_number=series_number + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="LungGAN",
            manufacturer_model_name=model_name,
            software_versions=__version__,
            device_serial_number="0",
            content_label="LUNGS",
            content_description=f"{' and '.join(names).capitalize()} segmented by LungGAN",
            series_description="Lungs (LungGAN)",
            # An empty mask (no lungs found) still gives a SEG, with its empty frames, rather than an error.
            omit_empty_frames=bool(frames.any()),
        )
    drop_incomplete_references(seg)
    return seg


#: Optional (type 3) reference sequences that highdicom copies from the source's patient and study modules.
_COPIED_REFERENCES = ("ReferencedStudySequence", "ReferencedPatientSequence")


def drop_incomplete_references(dataset) -> None:
    """Remove copied reference items that lack their SOP Class or Instance UID (both type 1).

    Scanners and anonymisers leave such items in the source (Lung-PET-CT-Dx
    does); copied as they are, they make the SEG invalid. The sequences are
    optional, so items that cannot be completed are dropped.
    """
    for keyword in _COPIED_REFERENCES:
        if keyword not in dataset:
            continue
        items = [item for item in dataset[keyword].value
                 if item.get("ReferencedSOPClassUID") and item.get("ReferencedSOPInstanceUID")]
        if items:
            dataset[keyword].value = items
        else:
            del dataset[keyword]


def write_seg(path: str | os.PathLike, labels: np.ndarray, volume: CTVolume, model_name: str,
              single_label: bool = False, overwrite: bool = False) -> Path:
    """Write the lungs as a DICOM SEG file, atomically and read back (see :func:`build_seg`)."""
    try:
        seg = build_seg(labels, volume, model_name, single_label)
    except (ValueError, TypeError, AttributeError) as exc:
        if isinstance(exc, LungGANError):
            raise
        raise InputError(f"the source DICOM of {volume.source} cannot carry a SEG ({exc}): write .nii.gz instead") from None

    def verify(name: str) -> None:
        import pydicom

        try:
            written = pydicom.dcmread(name)
            complete = written.SOPInstanceUID == seg.SOPInstanceUID and written.PixelData == seg.PixelData
        except Exception:  # pydicom raises many types on a cut file
            complete = False
        if not complete:
            raise OutputError("the file reads back incomplete")

    return atomic_write(path, lambda tmp: seg.save_as(tmp), suffix=".dcm", overwrite=overwrite, verify=verify)
