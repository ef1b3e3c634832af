"""Find methods, models, datasets and noise protocols by name, so a sweep is a list of strings."""
from typing import Callable, Generic, TypeVar

from nsegjax.errors import ConfigError

T = TypeVar('T')


class Registry(Generic[T]):
  """A name -> object table whose lookups fail with the list of valid names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
      if name in self._entries:
        raise ValueError(f'{self.kind} {name!r} is registered twice')
      self._entries[name] = obj
      return obj
    return decorator

  def get(self, name: str) -> T:
    try:
      return self._entries[name]
    except KeyError:
      raise ConfigError(
          f'unknown {self.kind} {name!r}; valid choices: {", ".join(self.names())}'
      ) from None

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries
