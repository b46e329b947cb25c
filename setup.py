"""Map the design card's top-level folders under the single import root `qwen35`."""
from setuptools import find_packages, setup

PARTS = ("planner", "launcher", "runtime", "profiles")

packages = []
package_dir = {}
for part in PARTS:
    packages.append(f"qwen35.{part}")
    packages.extend(f"qwen35.{part}.{sub}" for sub in find_packages(part))
    package_dir[f"qwen35.{part}"] = part

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"qwen35.profiles": ["*.yaml"], "qwen35.runtime": ["**/*.jinja"]},
)
