"""The decision layer: what Barricade answers to each SMTP event, without doing I/O.

Below it, the sans-IO protocol core (``barricade.protocol.session`` and its
neighbours) turns bytes into events; above it, the conductor
(``barricade.net.conductor``) runs the phase's checks, hands the verdict here,
and carries out the :class:`~barricade.decide.outcome.Outcome` it gets back
(the reply, and what to do with the client and the downstream connections).
``barricade-check`` asks the same rules.  Nothing here imports Twisted, and
nothing below this package imports it.
"""
