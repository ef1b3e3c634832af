"""Pure loss functions; each method composes the ones it needs."""
from nsegjax.losses.segmentation import (IGNORE, ce_dice_loss, cross_entropy,
                                         foreground_class_weights, pixel_cross_entropy,
                                         soft_dice_loss, valid_mask)
