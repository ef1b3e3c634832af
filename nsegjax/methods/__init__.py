"""Noisy-label methods, one file each, found by name: `create_method(config)`."""
from nsegjax.methods.base import LossAux, Method
from nsegjax.methods.adele import ADELE
from nsegjax.methods.coteach import CoTeaching
from nsegjax.methods.des import DES
from nsegjax.methods.gt_correct import GTCorrect
from nsegjax.methods.hqpm import HQPM
from nsegjax.methods.jcas import JCAS
from nsegjax.methods.mtcl import MTCL
from nsegjax.methods.robust_losses import GCE, SCE, SparseReg
from nsegjax.methods.supervised import CENoisy, Clean
from nsegjax.methods.trinet import TriNet
from nsegjax.methods.volmin import VolMin
from nsegjax.registry import Registry

METHODS = Registry('method')
for _cls in (CENoisy, Clean, JCAS, DES, GTCorrect, HQPM, GCE, SCE, SparseReg, VolMin,
             CoTeaching, TriNet, MTCL, ADELE):
  METHODS.register(_cls.name)(_cls)


def create_method(config) -> Method:
  return METHODS.get(config.method)(config)
