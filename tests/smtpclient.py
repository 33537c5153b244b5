"""The raw SMTP client: kept as an import path for the suite; see barricade.testing."""

from barricade.testing import Client, Reply  # noqa: F401
