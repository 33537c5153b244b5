"""Scanner plugins shipped with Barricade, installed as ``barricade.plugins``.

Plugins are :class:`barricade.policy.pipeline.Check` subclasses: they
override the hooks they need and return verdicts naming catalogue replies.
"""
