"""SOAE Lab core: Hessian-free second-order adversarial examples (Qian et al.) and friends.

Images everywhere are float tensors in [0, 1], shape (N, C, H, W); any normalisation lives
inside the model. Models return logits of shape (N, num_classes).
"""

__version__ = "0.1.0"
