"""Segmenting a CT: preprocessing, the generator slice by slice, the classical method, post-processing,
the lesion envelope, the lung report and batches (torch loads only with :mod:`.inference`)."""
