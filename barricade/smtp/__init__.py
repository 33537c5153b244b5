"""SMTP: the sans-IO session, its grammar, the Twisted server and relay client."""
