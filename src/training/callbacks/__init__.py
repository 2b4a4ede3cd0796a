"""The callbacks of the fold loop, one module per role (as argus's own `argus.callbacks`):
checkpoints, resume state, progress bars, training curves, sample counts, console output."""
