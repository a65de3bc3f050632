"""`--packages`, `--repositories`, `--exclude-packages`: Maven coordinates the driver resolves with Ivy.

In Kubernetes cluster mode spark-submit passes them to the driver as `spark.jars.packages`,
`spark.jars.repositories`, `spark.jars.excludes` (and `spark.jars.ivy`, `spark.jars.ivySettings`);
the driver's own spark-submit resolves them with Ivy, transitively, inside the pod. spark-submit also
resolves them on the client first, so a coordinate no repository has fails the submit at once.

We do that check without a JVM: each coordinate's POM is looked up in the Maven repository layout
(`<repo>/<group as path>/<artifact>/<version>/<artifact>-<version>.pom`) through fsspec, in the
repositories the driver will use (the given ones, then Maven Central, as Spark's default chain).
Transitive dependencies are left to Ivy in the driver: resolving a dependency graph (version ranges,
parent POMs, dependency management, exclusions) is Ivy's job, and re-implementing it here would be
a second, subtly different resolver.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubeaccel.errors import ConfigError, NotFoundError, UnavailableError

PACKAGES_KEY = "spark.jars.packages"
REPOSITORIES_KEY = "spark.jars.repositories"
EXCLUDES_KEY = "spark.jars.excludes"
IVY_KEY = "spark.jars.ivy"
CHECK_KEY = "spark.kubeaccel.packages.check"  # false: skip the client-side lookup (offline submitters)
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
_PART = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class Coordinate:
    group: str
    artifact: str
    version: str

    def __str__(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    def pom_path(self) -> str:
        base = f"{self.group.replace('.', '/')}/{self.artifact}/{self.version}"
        return f"{base}/{self.artifact}-{self.version}.pom"


@dataclass(frozen=True)
class Packages:
    coordinates: tuple[Coordinate, ...] = ()
    repositories: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    ivy: str | None = None
    check: bool = True


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_coordinate(text: str, key: str = PACKAGES_KEY) -> Coordinate:
    """`group:artifact:version` (Spark also accepts `group/artifact:version`)."""
    parts = text.replace("/", ":").split(":")
    if len(parts) != 3 or not all(_PART.fullmatch(p) for p in parts):
        raise ConfigError(
            f"{key}: {text[:200]!r} is not a Maven coordinate",
            hint="use groupId:artifactId:version, e.g. org.apache.spark:spark-avro_2.13:4.0.0",
        )
    return Coordinate(*parts)


def _check_repository(url: str) -> str:
    from urllib.parse import urlsplit

    scheme = urlsplit(url).scheme
    if not scheme or len(scheme) == 1:
        raise ConfigError(
            f"{REPOSITORIES_KEY}: {url[:200]!r} is not a repository URL",
            hint="use a URL such as https://repo.example.com/maven2 or file:///srv/maven",
        )
    return url.rstrip("/")


def packages_from_conf(conf: Mapping[str, str]) -> Packages:
    """The checked packages confs (what the driver's Ivy gets)."""
    coordinates = tuple(parse_coordinate(c) for c in _split(conf.get(PACKAGES_KEY, "")))
    repositories = tuple(_check_repository(r) for r in _split(conf.get(REPOSITORIES_KEY, "")))
    excludes = tuple(_split(conf.get(EXCLUDES_KEY, "")))
    for exclude in excludes:
        parts = exclude.split(":")
        if len(parts) != 2 or not all(_PART.fullmatch(p) for p in parts):
            raise ConfigError(
                f"{EXCLUDES_KEY}: {exclude[:200]!r} is not groupId:artifactId",
                hint="e.g. --exclude-packages org.slf4j:slf4j-api",
            )
    check = conf.get(CHECK_KEY, "true").strip().lower()
    if check not in ("true", "false"):
        raise ConfigError(f"{CHECK_KEY}={check[:50]!r} is not true or false", hint=f"e.g. {CHECK_KEY}=false")
    return Packages(coordinates, repositories, excludes, conf.get(IVY_KEY) or None, check == "true")


def _exists(repository: str, path: str) -> bool | None:
    """True / False when the repository answered; None when it could not be asked."""
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(repository)
        return bool(fs.exists(f"{root.rstrip('/')}/{path}"))
    except Exception:  # each fsspec backend raises its own family; an unanswerable repository is "unknown"
        return None


def check_resolvable(packages: Packages, *, default_repositories: Sequence[str] = (MAVEN_CENTRAL,)) -> None:
    """Fail the submit when a coordinate is in none of the repositories, as spark-submit's client does."""
    if not packages.coordinates or not packages.check:
        return
    repositories = [*packages.repositories, *default_repositories]
    for coordinate in packages.coordinates:
        answers = [_exists(repository, coordinate.pom_path()) for repository in repositories]
        if any(answers):
            continue
        if all(answer is None for answer in answers):
            raise UnavailableError(
                f"cannot look up {coordinate} in {', '.join(repositories)}",
                hint=f"check the network and --repositories, or skip the check with --conf {CHECK_KEY}=false",
            )
        raise NotFoundError(
            f"package {coordinate} is in none of the repositories {', '.join(repositories)}",
            hint="check the coordinate's spelling and version, or add its repository with --repositories",
        )
