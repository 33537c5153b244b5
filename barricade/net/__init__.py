"""The Twisted adapters: the client socket, the downstream connections, the conductor."""
