"""Optimisers and learning-rate schedules from `config.train`, shared by every method.

Methods with parameter groups (JCAS: frozen stem, heads at 10× lr, transition matrices with their
own SGD) build on `lr_schedule` and `base_optimizer` through `Method.make_optimizer`.
"""
import jax
import optax

from nsegjax.errors import ConfigError

SCHEDULES = ('constant', 'cosine', 'poly')
OPTIMIZERS = ('adam', 'sgd')


def lr_schedule(train_cfg, num_steps: int, peak: float | None = None) -> optax.Schedule:
  """The configured schedule over `num_steps`, peaking at `peak` (default train.lr)."""
  peak = float(train_cfg.lr if peak is None else peak)
  warmup = min(int(train_cfg.warmup_steps), max(num_steps - 1, 0))
  if train_cfg.lr_schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 1), max(num_steps, 2),
                                              end_value=peak * train_cfg.final_lr_fraction)
  if train_cfg.lr_schedule == 'poly':  # DeepLab's (1 − t/T)^0.9
    return optax.polynomial_schedule(peak, 0.0, 0.9, num_steps)
  if train_cfg.lr_schedule == 'constant':
    return optax.constant_schedule(peak)
  raise ConfigError(f'unknown train.lr_schedule {train_cfg.lr_schedule!r}; valid choices: '
                    f'{", ".join(SCHEDULES)}')


def base_optimizer(train_cfg, lr, weight_decay: float | None = None
                   ) -> optax.GradientTransformation:
  """Adam(W) or PyTorch-style SGD (g ← g + wd·θ; v ← m·v + g; θ ← θ − lr·v)."""
  weight_decay = float(train_cfg.weight_decay if weight_decay is None else weight_decay)
  if train_cfg.optimizer == 'adam':
    return optax.adamw(lr, weight_decay=weight_decay)
  if train_cfg.optimizer == 'sgd':
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(lr, momentum=train_cfg.momentum, nesterov=False))
  raise ConfigError(f'unknown train.optimizer {train_cfg.optimizer!r}; valid choices: '
                    f'{", ".join(OPTIMIZERS)}')


def with_grad_clip(train_cfg, tx: optax.GradientTransformation) -> optax.GradientTransformation:
  if train_cfg.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(train_cfg.grad_clip), tx)
  return tx


def make_optimizer(train_cfg, num_steps: int):
  """(optax transformation, learning-rate schedule) for one parameter group."""
  lr = lr_schedule(train_cfg, num_steps)
  return with_grad_clip(train_cfg, base_optimizer(train_cfg, lr)), lr


def keep_schedule_counts(fresh, old):
  """`fresh` optimiser state, except that every schedule keeps its position from `old`.

  Adam's own step count restarts with its moments (its bias correction needs that), while the
  learning-rate schedules, which span both stages, continue.
  """
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)  # noqa: E731
  return jax.tree.map(lambda f, o: o if is_schedule(f) else f, fresh, old, is_leaf=is_schedule)
