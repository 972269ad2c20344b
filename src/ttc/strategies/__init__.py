"""Test-time-compute strategies."""

from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN
from ttc.strategies.adaptive_vote import AdaptiveVote
from ttc.strategies.astar import AStar
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.beam import DVTS, BeamSearch
from ttc.strategies.best_of_n import BestOfN
from ttc.strategies.budget_forcing import BudgetForcing
from ttc.strategies.deepconf import DeepConf
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.first_finish import FirstFinish, StreamSample
from ttc.strategies.majority import MajorityVote
from ttc.strategies.particle import ParticleFilter
from ttc.strategies.particle_gibbs import ParallelTempering, ParticleGibbs
from ttc.strategies.rpc import RPC
from ttc.strategies.sample import Sample

__all__ = [
    "DVTS",
    "RPC",
    "AStar",
    "AdaptiveBestOfN",
    "AdaptiveVote",
    "BeamSearch",
    "BestOfN",
    "BudgetForcing",
    "DeepConf",
    "EarlyExit",
    "FirstFinish",
    "MajorityVote",
    "ParallelTempering",
    "ParticleFilter",
    "ParticleGibbs",
    "Sample",
    "Sampler",
    "Strategy",
    "StreamSample",
]
