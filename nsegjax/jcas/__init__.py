"""JCAS maths (METHODS.md §3.1): PyTorch-matching resampling, affinity and DAR in linear
memory, and the class-affinity loss correction. Pure JAX functions; the model and the
method live elsewhere."""
from nsegjax.jcas.affinity import affinity_matrix
from nsegjax.jcas.affinity import affinity_rows
from nsegjax.jcas.affinity import clamp_like_torch
from nsegjax.jcas.affinity import dar_blocked
from nsegjax.jcas.affinity import dar_from_affinity
from nsegjax.jcas.affinity import dar_naive
from nsegjax.jcas.affinity import map_row_blocks
from nsegjax.jcas.affinity import normalize_embeddings
from nsegjax.jcas.calc import affinity_bce
from nsegjax.jcas.calc import affinity_bce_blocked
from nsegjax.jcas.calc import affinity_classes
from nsegjax.jcas.calc import affinity_targets
from nsegjax.jcas.calc import branch_losses
from nsegjax.jcas.calc import cacr_loss
from nsegjax.jcas.calc import class_to_affinity
from nsegjax.jcas.calc import dar_and_affinity_bce_blocked
from nsegjax.jcas.calc import dar_predict
from nsegjax.jcas.calc import forward_corrected_nll
from nsegjax.jcas.calc import fuse_predictions
from nsegjax.jcas.calc import init_transition_logits
from nsegjax.jcas.calc import jcas_loss
from nsegjax.jcas.calc import JcasWeights
from nsegjax.jcas.calc import label_prior
from nsegjax.jcas.calc import log_abs_det
from nsegjax.jcas.calc import noisy_similarity
from nsegjax.jcas.calc import transition_matrix
from nsegjax.jcas.calc import volume_loss
from nsegjax.resize import bilinear_matrix
from nsegjax.resize import nearest_indices
from nsegjax.resize import resize_bilinear
from nsegjax.resize import resize_nearest
