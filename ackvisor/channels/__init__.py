"""Phoenix Channels wire protocol, endpoint and channel runtime for ackvisor."""
