"""The offline tools' user errors: inputs, outputs or requests they cannot process; the text says why.
Torch-free, so the CLI catches them without loading the engine."""


class BagError(ValueError):
    """The bag or the request cannot be processed."""


class SegmentError(ValueError):
    """The images or the output folder cannot be segmented as asked."""
