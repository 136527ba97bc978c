"""Measuring masks: Dice, IoU and Hausdorff, lesion inclusion and spill against radiologists' marks,
the shared reference masks, and pictures of them."""
