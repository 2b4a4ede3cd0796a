"""The callbacks of the fold loop, one module per role (as argus's own `argus.callbacks`):
the better epoch (improvement), the checkpoint and early stopping on it, resume state, progress
bars, training curves, sample counts, console output, a search's trial reports."""
