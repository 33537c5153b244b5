"""twistd dropin: ``twistd barricade`` (the module is imported only when used)."""

from twisted.application.service import ServiceMaker

barricade = ServiceMaker(
    "Barricade",
    "barricade.tap",
    "SMTP filtering proxy: per-event policy, live relay to the downstream MTA",
    "barricade",
)
