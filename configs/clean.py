"""The upper bound: the default job trained on the clean labels."""
from configs import default


def get_config(arg: str = 'synthetic'):
  config = default.get_config(arg)
  config.method = 'clean'
  return config
