"""Check the built sdist and wheel before anything installs them.

Usage: python check_dist.py DIST_DIR SUITE_SH

The wheel must carry djthreads/py.typed, the pytest11 entry point, the licence
and nothing but the djthreads package; the sdist must carry the same package.
Its metadata must claim exactly the Python and Django lines that SUITE_SH (the
CI matrix) tests: a classifier per line, requires-python from the lowest one,
and a Django requirement that admits every tested line and no other.
"""

from __future__ import annotations

import configparser
import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ENTRY_POINT = ("pytest11", "djthreads", "djthreads.pytest_plugin")
FILES = ("djthreads/py.typed", "djthreads/pytest_plugin.py", "djthreads/test/_tracker.py")


def fail(message: str) -> None:
    raise SystemExit(f"check_dist: {message}")


def tested_lines(suite: Path) -> tuple[set[str], set[str]]:
    """Return the Python and Django X.Y lines named by the venvs in the matrix."""
    pythons, djangos = set(), set()
    for major, minor, dj_major, dj_minor in re.findall(
        r'^\s*"py(\d)(\d+)-dj(\d)(\d)-\w+ tests\.', suite.read_text(), re.MULTILINE
    ):
        pythons.add(f"{major}.{minor}")
        djangos.add(f"{dj_major}.{dj_minor}")
    if not pythons:
        fail(f"found no venv of the matrix in {suite}.")
    return pythons, djangos


def check_wheel(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA")).rpartition("/")[0]
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    for needed in FILES:
        if needed not in names:
            fail(f"{wheel.name} lacks {needed}.")
    if not any(n.startswith(f"{info}/licenses/LICENSE") for n in names):
        fail(f"{wheel.name} lacks the LICENSE file.")
    stray = sorted({n.split("/")[0] for n in names} - {"djthreads", info})
    if stray:
        fail(f"{wheel.name} carries more than the djthreads package: {stray}.")
    parser = configparser.ConfigParser()
    parser.read_string(entry_points)
    group, name, target = ENTRY_POINT
    if not parser.has_section(group) or parser[group].get(name) != target:
        fail(f"{wheel.name} lacks the entry point [{group}] {name} = {target}:\n{entry_points}")
    return metadata


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    for needed in ("djthreads/py.typed", "pyproject.toml", "README.md", "LICENSE"):
        if needed not in names:
            fail(f"{sdist.name} lacks {needed}.")


def check_claims(metadata: str, pythons: set[str], djangos: set[str]) -> None:
    message = Parser().parsestr(metadata)
    classifiers = message.get_all("Classifier") or []
    claimed_pythons = {
        c.rpartition(" :: ")[2]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    claimed_djangos = {
        c.rpartition(" :: ")[2] for c in classifiers if c.startswith("Framework :: Django :: ")
    }
    for what, claimed, tested in (
        ("Python", claimed_pythons, pythons),
        ("Django", claimed_djangos, djangos),
    ):
        if claimed != tested:
            fail(f"the classifiers claim {what} {sorted(claimed)}; CI tests {sorted(tested)}.")

    lowest = min(pythons, key=Version)
    requires_python = message["Requires-Python"]
    if SpecifierSet(requires_python or "") != SpecifierSet(f">={lowest}"):
        fail(f"requires-python is {requires_python!r}; the lowest tested Python is {lowest}.")

    django = next(
        (
            Requirement(r)
            for r in message.get_all("Requires-Dist") or []
            if Requirement(r).name.lower() == "django" and not Requirement(r).marker
        ),
        None,
    )
    if django is None:
        fail("the wheel does not require Django.")
    assert django is not None
    tested = sorted(Version(line) for line in djangos)
    admitted = [f"{v.major}.{v.minor}.{patch}" for v in tested for patch in (0, 99)]
    low, high = tested[0], tested[-1]
    refused = [
        # The last release before the lowest line, and the next lines after the highest.
        f"{low.major}.{low.minor - 1}.99" if low.minor else f"{low.major - 1}.99.99",
        f"{high.major}.{high.minor + 1}.0",
        f"{high.major + 1}.0.0",
    ]
    wrong = [v for v in admitted if v not in django.specifier] + [
        v for v in refused if v in django.specifier
    ]
    if wrong:
        fail(
            f"the requirement {django} does not match the tested Django {sorted(djangos)}: "
            f"it gets {wrong} wrong."
        )


def main() -> None:
    dist, suite = Path(sys.argv[1]), Path(sys.argv[2])
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        fail(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}.")
    metadata = check_wheel(wheels[0])
    check_sdist(sdists[0])
    pythons, djangos = tested_lines(suite)
    check_claims(metadata, pythons, djangos)
    print(
        f"{wheels[0].name}: py.typed, pytest11 entry point, licence; claims Python "
        f"{', '.join(sorted(pythons, key=Version))} and Django "
        f"{', '.join(sorted(djangos, key=Version))}, as CI tests"
    )


if __name__ == "__main__":
    main()
