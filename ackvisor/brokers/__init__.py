"""Distributed engines for ackvisor's pubsub, history and presence.

:class:`RedisBroker` (``ackvisor.brokers.redis``) connects one node to a
Redis shared by every node of the cluster; see its module docstring and
``shared/spec/REDIS.md``.
"""

from .redis import RedisBroker
from .redis_channels import NodeBridge, RedisHistory
from .redis_codec import BrokerError, BrokerStatistics, BrokerUnavailable, PresenceEvent, Publication

__all__ = ["RedisBroker", "NodeBridge", "RedisHistory", "BrokerError", "BrokerStatistics", "BrokerUnavailable", "PresenceEvent", "Publication"]
