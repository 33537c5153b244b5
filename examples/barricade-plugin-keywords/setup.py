"""An example Barricade plugin, packaged the way a third party ships one."""

from setuptools import setup

setup(
    name="barricade-plugin-keywords",
    version="1.0.0",
    description="Barricade plugin: reject or tag mail by the words in it",
    packages=["barricade_keywords"],
    install_requires=["barricade"],
    extras_require={"test": ["pytest", "pytest-twisted"]},
    # This line is what makes `plugins=keywords` work once the package is installed.
    entry_points={"barricade.plugins": ["keywords = barricade_keywords.plugin:KeywordFilter"]},
)
