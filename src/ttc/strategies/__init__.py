"""Test-time-compute strategies."""

from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.best_of_n import BestOfN
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.first_finish import FirstFinish, StreamSample
from ttc.strategies.majority import MajorityVote
from ttc.strategies.sample import Sample

__all__ = ["BestOfN", "MajorityVote", "Sample", "Sampler", "Strategy"]
__all__ += ["EarlyExit", "FirstFinish", "StreamSample"]
