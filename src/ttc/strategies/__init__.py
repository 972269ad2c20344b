"""Test-time-compute strategies."""

from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN
from ttc.strategies.adaptive_vote import AdaptiveVote
from ttc.strategies.astar import AStar
from ttc.strategies.base import Sampler, Strategy
from ttc.strategies.beam import DVTS, BeamSearch
from ttc.strategies.best_of_n import BestOfN
from ttc.strategies.deepconf import DeepConf
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.first_finish import FirstFinish, StreamSample
from ttc.strategies.genselect import GenSelect
from ttc.strategies.layers import Critique, Fuse, Rank, Verify
from ttc.strategies.majority import MajorityVote
from ttc.strategies.particle import ParticleFilter
from ttc.strategies.particle_gibbs import ParallelTempering, ParticleGibbs
from ttc.strategies.rpc import RPC
from ttc.strategies.rsa import RSA
from ttc.strategies.sample import Sample

__all__ = [
    "DVTS",
    "RPC",
    "RSA",
    "AStar",
    "AdaptiveBestOfN",
    "AdaptiveVote",
    "BeamSearch",
    "BestOfN",
    "Critique",
    "DeepConf",
    "EarlyExit",
    "FirstFinish",
    "Fuse",
    "GenSelect",
    "MajorityVote",
    "ParallelTempering",
    "ParticleFilter",
    "ParticleGibbs",
    "Rank",
    "Sample",
    "Sampler",
    "Strategy",
    "StreamSample",
    "Verify",
]
