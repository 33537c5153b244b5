"""Barricade packaging: ``pip install .`` (``.[test]`` adds the test tools)."""

from setuptools import setup

setup(
    name="barricade",
    version="0.1.0",
    description="SMTP filtering proxy for mail gateways (a re-creation of smtpf/BarricadeMX)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[
        "barricade",
        "barricade.smtp",
        "barricade.policy",
        "barricade.data",  # the TLD list of reject-unknown-tld
        "barricade.state",
        "barricade.plugins",
        "twisted.plugins",
    ],
    package_dir={"barricade.plugins": "plugins"},
    install_requires=[
        "twisted[tls]>=23.10",
        "dnspython>=2.4",
        "redis>=5.0",
        "hiredis>=2.0",
        "prometheus-client>=0.17",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-twisted>=1.14", "hypothesis>=6", "ruff>=0.4", "aiosmtpd>=1.4"],
    },
    include_package_data=True,
    package_data={"barricade.data": ["*.txt"], "barricade.state": ["lua/*.lua"]},
    entry_points={"console_scripts": ["barricade-check = barricade.explain:main"]},
    zip_safe=False,
)
