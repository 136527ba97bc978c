"""Errors that carry a message meant for the person running LungGAN."""

from __future__ import annotations


class LungGANError(Exception):
    """A problem with the user's input or files; the message says what to do.

    The command line prints the message on one line and exits with status 2.
    """


class InputError(LungGANError, ValueError):
    """The input image, folder or file cannot be used as it is."""


class ModelError(LungGANError, ValueError):
    """A model file is missing, corrupt or does not fit the generator."""


class OutputExistsError(LungGANError, FileExistsError):
    """The output file exists and overwriting was not asked for."""


class OutputError(LungGANError, OSError):
    """An output could not be written (read-only folder, full disk, a size limit); nothing was left behind."""
