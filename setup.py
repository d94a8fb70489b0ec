"""Only what pyproject.toml cannot say: the documents in docs/ are installed as the data
package `sockprobe._docs` (so `sockprobe docs TOPIC` works from a wheel) while staying in
docs/ in the source tree, where the README links them. pyproject's `packages.find` cannot
add a package that lives outside the package directory, hence this one call."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["sockprobe", "sockprobe.*"]), "sockprobe._docs"],
    package_dir={"sockprobe._docs": "docs"},
)
