"""Second level: an MLP on the out-of-fold tile predictions of the first-level experiments."""
