"""Training the generator: the baseline and the five LGAN critics, datasets and augmentation, losses,
the training settings, checkpoints, and the paper's comparison of the six variants."""
