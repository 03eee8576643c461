"""
What a backup leaves out: exclude patterns, ignore files, marker files and limits.

Patterns are gitignore-like, as restic reads them:

- ``*`` matches within one path component, ``**`` across components, ``?``
  one character, ``[abc]``/``[!abc]`` a character class.
- A pattern without ``/`` matches a name at any depth (``*.log``).
- A pattern starting with ``/`` is anchored: it matches from the root of
  the file system (``/srv/data/tmp``). Any other pattern with a ``/`` matches
  a trailing run of components (``cache/*.bin`` matches ``/a/cache/x.bin``).
- A trailing ``/`` matches directories only; a leading ``!`` re-includes what
  an earlier pattern excluded (the last matching pattern decides). A directory
  that is excluded is not entered, so nothing under it can be re-included.
- ``#`` starts a comment line in a pattern file; blank lines are ignored.

A ``.safeholdignore`` file in a directory adds its patterns for that
directory's subtree, as ``.gitignore`` does: there, a pattern with a ``/``
(leading or in the middle) is anchored to the file's directory.

Matching costs a regular-expression match or two per entry: the patterns are
compiled into one expression per kind when none of them re-includes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from safehold.core.errors import UsageError

__all__ = [
    "CACHEDIR_SIGNATURE",
    "IGNORE_FILE",
    "ExcludeOptions",
    "Excluder",
    "pattern_matcher",
    "read_pattern_file",
]

IGNORE_FILE = ".safeholdignore"
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


@dataclass(frozen=True)
class ExcludeOptions:
    """
    What to leave out of a backup.

    Attributes:
        patterns: exclude patterns (``--exclude``, ``--exclude-file``).
        ipatterns: the same, matched without regard to case (``--iexclude``).
        if_present: ``NAME`` or ``NAME:HEADER``: a directory holding a file
            NAME (that starts with HEADER) is left out.
        larger_than: files larger than this many bytes are left out.
        one_file_system: do not enter directories on another file system
            (the mount point itself is kept, empty).
        exclude_caches: a directory with a valid ``CACHEDIR.TAG`` keeps only
            that file.
        ignore_files: read ``.safeholdignore`` files.
    """

    patterns: tuple[str, ...] = ()
    ipatterns: tuple[str, ...] = ()
    if_present: tuple[str, ...] = ()
    larger_than: int | None = None
    one_file_system: bool = False
    exclude_caches: bool = False
    ignore_files: bool = True


def read_pattern_file(path: str) -> list[str]:
    """
    Read patterns, one a line; blank lines and ``#`` comments are skipped.

    Raises:
        UsageError: the file cannot be read.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the pattern file {path}: {exc.strerror}") from exc
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _glob(pattern: str) -> str:
    """Translate a glob to a regular expression (no anchors)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pattern[i + 1 : j]
            neg = body[:1] in ("!", "^")
            body = body[1:] if neg else body
            out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Rule:
    regex: str  # matched against the name, or the absolute path
    on_name: bool
    dir_only: bool
    negate: bool
    literal: str = ""  # a part every matching path contains (a fast pre-check), if any


def _literal(pattern: str) -> str:
    """The longest run of plain characters in a glob: every match contains it."""
    plain = re.sub(r"\[[^\]]*\]", "*", pattern)
    runs = re.split(r"[*?\\\[\]]", plain)
    best = max(runs, key=len)
    return best if len(best) >= 3 else ""


END = r"\Z"  # not "$", which also matches before a newline that ends a name


def _rule(pattern: str, *, icase: bool, base: str | None) -> _Rule | None:
    """
    Compile one pattern. *base* is the directory of an ignore file (anchoring
    patterns with a slash to it), or None for a command-line pattern.
    """
    negate = pattern.startswith("!")
    p = pattern[1:] if negate else pattern
    if p.startswith(("\\!", "\\#")):
        p = p[1:]
    dir_only = p.endswith("/") and p.rstrip("/") != ""
    p = p.rstrip("/") if dir_only else p
    if not p:
        return None
    flags = "(?i:{})" if icase else "(?:{})"
    if "/" not in p:
        return _Rule(flags.format(_glob(p)), True, dir_only, negate)
    lit = "" if icase else _literal(p)
    if base is not None:
        anchored = re.escape(base.rstrip("/")) + "/" + _glob(p.lstrip("/"))
        return _Rule(flags.format("^" + anchored + END), False, dir_only, negate, lit)
    if p.startswith("/"):
        return _Rule(flags.format("^" + _glob(p) + END), False, dir_only, negate, lit)
    return _Rule(flags.format("(?:^|/)" + _glob(p) + END), False, dir_only, negate, lit)


def _combine(rules: Sequence[_Rule]) -> re.Pattern[str] | None:
    return re.compile("|".join(r.regex for r in rules)) if rules else None


def _split(
    rules: Sequence[_Rule],
) -> tuple[re.Pattern[str] | None, list[tuple[str, re.Pattern[str]]]]:
    """The rules without a literal, combined; and each rule with one, with its literal."""
    with_lit = [(r.literal, re.compile(r.regex)) for r in rules if r.literal]
    return _combine([r for r in rules if not r.literal]), with_lit


class Excluder:
    """
    Decide, entry by entry, what a backup leaves out.

    One ``Excluder`` holds the rules in force in one directory; ``child``
    returns the rules for a subdirectory (adding its ``.safeholdignore``).
    """

    def __init__(self, options: ExcludeOptions, rules: Sequence[_Rule] = ()) -> None:
        self.options = options
        self.rules = tuple(rules)
        self._ordered = any(r.negate for r in self.rules)
        # Without re-includes, any match excludes: one expression per kind.
        groups: dict[tuple[bool, bool], list[_Rule]] = {}
        for r in self.rules:
            groups.setdefault((r.on_name, r.dir_only), []).append(r)
        self._name_any = _combine(groups.get((True, False), []))
        self._name_dir = _combine(groups.get((True, True), []))
        # A path expression costs about 10 µs an entry, a substring test far less:
        # rules with a literal run only where the path contains it.
        self._path_any, self._lit_any = _split(groups.get((False, False), []))
        self._path_dir, self._lit_dir = _split(groups.get((False, True), []))
        self._compiled = [(re.compile(r.regex), r) for r in self.rules] if self._ordered else []
        self.markers = [_marker(m) for m in options.if_present]

    @classmethod
    def from_options(cls, options: ExcludeOptions) -> Excluder:
        """
        The rules at the roots of a backup.

        Raises:
            UsageError: a pattern is not a valid pattern.
        """
        rules = [_rule(p, icase=False, base=None) for p in options.patterns]
        rules += [_rule(p, icase=True, base=None) for p in options.ipatterns]
        return cls._build(options, [r for r in rules if r is not None])

    @classmethod
    def _build(cls, options: ExcludeOptions, rules: Sequence[_Rule]) -> Excluder:
        try:
            return cls(options, rules)
        except re.error as exc:
            raise UsageError(f"invalid exclude pattern: {exc}") from exc

    @property
    def active(self) -> bool:
        """Whether anything may be excluded at all (else the walker skips the checks)."""
        o = self.options
        return bool(
            self.rules
            or o.if_present
            or o.larger_than is not None
            or o.one_file_system
            or o.exclude_caches
            or o.ignore_files
        )

    def excluded(self, path: str, name: str, is_dir: bool) -> bool:
        """Whether the entry at *path* (absolute) is left out by a pattern."""
        if not self.rules:
            return False
        if self._ordered:
            verdict = False
            for rx, r in self._compiled:
                if r.dir_only and not is_dir:
                    continue
                if rx.fullmatch(name) if r.on_name else rx.search(path):
                    verdict = not r.negate
            return verdict
        return bool(
            (self._name_any is not None and self._name_any.fullmatch(name))
            or (self._path_any is not None and self._path_any.search(path))
            or any(lit in path and rx.search(path) for lit, rx in self._lit_any)
            or (
                is_dir
                and (
                    (self._name_dir is not None and self._name_dir.fullmatch(name))
                    or (self._path_dir is not None and self._path_dir.search(path))
                    or any(lit in path and rx.search(path) for lit, rx in self._lit_dir)
                )
            )
        )

    def too_large(self, size: int) -> bool:
        """Whether a file of *size* bytes is left out."""
        limit = self.options.larger_than
        return limit is not None and size > limit

    def child(self, path: str, names: set[str]) -> Excluder:
        """
        The rules for the directory at *path*, whose entries are *names*.

        Raises:
            UsageError: its ignore file holds an invalid pattern.
        """
        if not (self.options.ignore_files and IGNORE_FILE in names):
            return self
        try:
            patterns = read_pattern_file(os.path.join(path, IGNORE_FILE))
        except UsageError:
            return self  # an unreadable ignore file is the same as none; the walker warns
        rules = [_rule(p, icase=False, base=path) for p in patterns]
        extra = [r for r in rules if r is not None]
        return self._build(self.options, [*self.rules, *extra]) if extra else self

    def marked(self, path: str, names: set[str]) -> bool:
        """Whether the directory at *path* holds an ``--exclude-if-present`` marker."""
        return any(
            name in names and _has_header(path, name, header) for name, header in self.markers
        )

    def cache_dir(self, path: str, names: set[str]) -> bool:
        """Whether the directory is a cache (``--exclude-caches``, a valid CACHEDIR.TAG)."""
        return (
            self.options.exclude_caches
            and CACHEDIR_TAG in names
            and _has_header(path, CACHEDIR_TAG, CACHEDIR_SIGNATURE)
        )


def pattern_matcher(patterns: Sequence[str], *, icase: bool = False) -> Excluder:
    """
    Rules that only match *patterns* (for ``find``): ``excluded`` says whether one matches.

    Raises:
        UsageError: a pattern is invalid.
    """
    p = tuple(patterns)
    options = ExcludeOptions(ipatterns=p) if icase else ExcludeOptions(patterns=p)
    return Excluder.from_options(replace(options, ignore_files=False))


def _marker(spec: str) -> tuple[str, bytes]:
    name, _, header = spec.partition(":")
    if not name or "/" in name:
        raise UsageError(f"--exclude-if-present {spec!r}: give a file name, optionally :HEADER")
    return name, header.encode()


def _has_header(directory: str, name: str, header: bytes) -> bool:
    if not header:
        return True
    try:
        fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return os.read(fd, len(header)) == header
    finally:
        os.close(fd)
