"""Phoenix Channels over trio-websocket: endpoint, connections, channels, server-tracked acks, pubsub."""

from .acks import AckStatistics, AckTracker, CheckAck, PendingAck
from .channel import Assigns, Channel, JoinRefused, ReplyRef, Socket
from .connection import ConnectInfo, ConnectRefused, Connection
from .endpoint import Endpoint, EndpointSettings
from .protocol import Message, ProtocolError
from .pubsub import Broadcast, PubSub
from .router import Router

__all__ = [
    "AckStatistics", "AckTracker", "CheckAck", "PendingAck",
    "Assigns", "Channel", "JoinRefused", "ReplyRef", "Socket",
    "ConnectInfo", "ConnectRefused", "Connection",
    "Endpoint", "EndpointSettings",
    "Message", "ProtocolError",
    "Broadcast", "PubSub",
    "Router",
]
