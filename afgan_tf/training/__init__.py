"""Training building blocks: loss phases (R1, lazy regularisation), D-input blur, ADA augmentation, G EMA, torch's
Adam.

The training iteration (``trainer.py``, phase table ``phases.py``), the run around it (``run.py``) and
``session.train`` (what ``tools/train.py`` calls) are built on top of these.
"""
from .augment import AdaController, AugmentPipe, make_augment
from .blur import DInputBlur, blur_images, blur_kernel, blur_sigma
from .ema import EmaUpdater, ema_beta, update_ema
from .loss import StyleGAN2Loss, lazy_adam_params, phase_schedule, r1_penalty, sanitize_gradients
from .optim import TorchAdam, make_optimizer

__all__ = ["AdaController", "AugmentPipe", "make_augment", "DInputBlur", "blur_images", "blur_kernel",
           "blur_sigma", "EmaUpdater", "ema_beta", "update_ema", "StyleGAN2Loss", "lazy_adam_params",
           "phase_schedule", "r1_penalty", "sanitize_gradients", "TorchAdam", "make_optimizer"]
