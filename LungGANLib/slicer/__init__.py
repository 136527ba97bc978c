"""The Slicer side: the MRML adapter (the only code that imports ``slicer``), background jobs and the
panel's behaviour. Nothing here is imported by the rest of the core."""
